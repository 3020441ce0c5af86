"""A Hugging Face Hub in a thread on 127.0.0.1, so push -> download round trips run without a network.

It serves what `huggingface_hub` 2.4 and `transformers` call for model repos (see ../shared/docs/facts.md,
"The Hub without a network"): repo creation, whoami, YAML validation, preupload (every file "regular",
so contents come base64 inside the commit: no LFS, no Xet), NDJSON commits, model and revision info,
file trees, refs and commits lists, the agent-harness registry, and HEAD/GET of `/{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`
and `ETag`. Commits are kept in memory with real 40-hex ids, so revisions can be pinned.

Every request is recorded in `hub.requests` (method, path); anything it does not know is answered 404
and recorded in `hub.unknown`, so a test can assert that nothing unexpected was asked. `hub.fail` maps
an endpoint kind ("commit", "preupload", "create", "resolve") to an HTTP status to answer instead.

    with FakeHub() as hub:
        env["HF_ENDPOINT"] = hub.url   # before huggingface_hub is imported
"""

import base64
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "hf_fake_token_for_tests"
USER = "tester"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass
class Commit:
    oid: str
    title: str
    parent: str | None
    files: dict[str, bytes]
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


def _oid(*parts: object) -> str:
    return hashlib.sha1(repr((*parts, time.time_ns(), os.urandom(8))).encode()).hexdigest()


def blob_etag(content: bytes) -> str:
    """The git blob id, the ETag the Hub gives a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ what tests use directly
    def create(self, repo_id: str, private: bool = False) -> Repo:
        with self.lock:
            if repo_id not in self.repos:
                repo = Repo(repo_id, private)
                first = Commit(
                    _oid(repo_id), "initial commit", None, {".gitattributes": b"*.bin filter=lfs\n"}
                )
                repo.commits[first.oid] = first
                repo.branches["main"] = first.oid
                self.repos[repo_id] = repo
            return self.repos[repo_id]

    def commit(self, repo_id: str, files: dict[str, bytes], title: str = "upload", deleted=(), branch="main"):
        """Add a commit on `branch` (a test seeding a repo, or the commit endpoint); returns its id."""
        repo = self.create(repo_id)
        with self.lock:
            parent = repo.commits[repo.branches[branch]]
            tree = {
                k: v for k, v in parent.files.items() if k not in deleted and not k.startswith(tuple(deleted))
            }
            tree.update(files)
            new = Commit(_oid(repo_id, title), title, parent.oid, tree)
            repo.commits[new.oid] = new
            repo.branches[branch] = new.oid
            return new.oid

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return dict(self.repos[repo_id].resolve(revision).files)

    def history(self, repo_id: str) -> list[str]:
        """Commit ids on main, newest first."""
        repo, out = self.repos[repo_id], []
        oid = repo.branches["main"]
        while oid:
            out.append(oid)
            oid = repo.commits[oid].parent
        return out


def _handler(hub: FakeHub):
    repo_path = r"(?P<repo>[^/]+(?:/[^/]+)?)"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # ---------------------------------------------------------------------------- plumbing
        def _send(self, status, body=b"", headers=None, head=False):
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _error(self, status, code, message, head=False):
            self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, head)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _repo(self, repo_id, head=False):
            repo = hub.repos.get(unquote(repo_id))
            if repo is None:
                self._error(404, "RepositoryNotFound", f"Repository Not Found for url: {self.path}", head)
            return repo

        def _failing(self, kind, head=False) -> bool:
            status = hub.fail.get(kind)
            if status:
                self._send(status, {"error": f"fake hub: {kind} fails with {status}"}, head=head)
                return True
            return False

        def _route(self, method):
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            with hub.lock:
                hub.requests.append((method, self.path))
            head = method == "HEAD"
            if path == "/api/whoami-v2":
                return self._send(
                    200, {"type": "user", "name": USER, "orgs": [], "auth": {"type": "access_token"}}
                )
            if path == "/api/agent-harnesses":  # huggingface_hub's best-effort agent detection, once a day
                return self._send(200, {"standardEnvVars": [], "harnesses": {}})
            if path == "/api/repos/create" and method == "POST":
                if self._failing("create"):
                    return
                data = json.loads(self._body() or b"{}")
                repo_id = f"{data.get('organization') or USER}/{data['name']}"
                existed = repo_id in hub.repos
                hub.create(repo_id, bool(data.get("private")))
                body = {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id}
                if existed:  # the Hub's 409 carries the url too, which create_repo(exist_ok=True) reads
                    message = "You already created this model repo"
                    return self._send(409, {**body, "error": message}, {"X-Error-Code": "RepoExists"})
                return self._send(200, body)
            if path == "/api/validate-yaml" and method == "POST":
                self._body()
                return self._send(200, {"errors": [], "warnings": []})
            m = re.fullmatch(rf"/api/(?P<type>models|datasets|spaces)/{repo_path}(?P<rest>/.*)?", path)
            if m and REPO_TYPES[m["type"]] == "model":
                return self._api(method, m["repo"], m["rest"] or "", query)
            m = re.fullmatch(rf"/{repo_path}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
            if m and method in ("GET", "HEAD"):
                return self._resolve(m["repo"], m["rev"], m["file"], head)
            return self._unknown(method, head)

        def _unknown(self, method, head=False):
            with hub.lock:
                hub.unknown.append((method, self.path))
            self._error(404, "NotImplemented", f"fake hub does not serve {method} {self.path}", head)

        # ----------------------------------------------------------------------- /api/models/...
        def _api(self, method, repo_id, rest, query):
            body = self._body() if method == "POST" else b""
            repo = self._repo(repo_id)
            if repo is None:
                return
            m = re.fullmatch(r"(?:/revision/(?P<rev>[^/]+))?", rest)
            if m and method == "GET":
                commit = repo.resolve(m["rev"] or "main")
                if commit is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}")
                return self._send(200, self._info(repo, commit))
            m = re.fullmatch(r"/preupload/(?P<rev>[^/]+)", rest)
            if m and method == "POST":
                if self._failing("preupload"):
                    return
                files = json.loads(body).get("files", [])
                out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._send(200, {"files": out, "commitOid": repo.branches.get("main")})
            m = re.fullmatch(r"/commit/(?P<rev>[^/]+)", rest)
            if m and method == "POST":
                if self._failing("commit"):
                    return
                return self._commit(repo, unquote(m["rev"]), body)
            m = re.fullmatch(r"/tree/(?P<rev>[^/]+)(?:/(?P<dir>.*))?", rest)
            if m and method == "GET":
                commit = repo.resolve(m["rev"])
                if commit is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}")
                return self._send(200, self._tree(commit, m["dir"] or "", query.get("recursive") == ["true"]))
            if rest == "/refs" and method == "GET":
                branches = [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": o} for b, o in repo.branches.items()
                ]
                return self._send(200, {"branches": branches, "tags": [], "converts": []})
            m = re.fullmatch(r"/commits/(?P<rev>[^/]+)", rest)
            if m and method == "GET":
                commit, out = repo.resolve(m["rev"]), []
                while commit is not None:
                    out.append(
                        {
                            "id": commit.oid,
                            "title": commit.title,
                            "message": "",
                            "authors": [],
                            "date": commit.date,
                        }
                    )
                    commit = repo.commits.get(commit.parent) if commit.parent else None
                return self._send(200, out)
            m = re.fullmatch(r"/branch/(?P<branch>[^/]+)", rest)
            if m and method == "POST":
                data = json.loads(body or b"{}")
                start = repo.resolve(data.get("startingPoint") or "main")
                if unquote(m["branch"]) in repo.branches:
                    return self._error(409, "BranchExists", "branch already exists")
                repo.branches[unquote(m["branch"])] = start.oid
                return self._send(200, {})
            return self._unknown(method)

        def _info(self, repo, commit):
            return {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "lastModified": commit.date,
                "createdAt": commit.date,
                "siblings": [{"rfilename": name} for name in sorted(commit.files)],
            }

        def _tree(self, commit, folder, recursive):
            prefix = folder.strip("/") + "/" if folder.strip("/") else ""
            entries, dirs = [], set()
            for name, content in sorted(commit.files.items()):
                if not name.startswith(prefix):
                    continue
                rel = name[len(prefix) :]
                parts = rel.split("/")
                for i in range(1, len(parts)):
                    d = prefix + "/".join(parts[:i])
                    if (recursive or i == 1) and d not in dirs:
                        dirs.add(d)
                        entries.append(
                            {"type": "directory", "oid": blob_etag(d.encode()), "size": 0, "path": d}
                        )
                if recursive or len(parts) == 1:
                    entries.append(
                        {"type": "file", "oid": blob_etag(content), "size": len(content), "path": name}
                    )
            return entries

        def _commit(self, repo, revision, body):
            header, files, deleted = {}, {}, []
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    header = value
                elif item["key"] == "file":
                    assert value.get("encoding", "base64") == "base64", value
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"])
                else:
                    return self._error(
                        400, "BadRequest", f"fake hub: commit item {item['key']!r} not supported"
                    )
            if revision not in repo.branches:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            parent = header.get("parentCommit")
            if parent and parent != repo.branches[revision]:
                return self._error(412, "PreconditionFailed", "A commit has happened since parentCommit")
            oid = hub.commit(repo.repo_id, files, header.get("summary", "upload"), deleted, branch=revision)
            return self._send(
                200,
                {"commitUrl": f"{hub.url}/{repo.repo_id}/commit/{oid}", "commitOid": oid, "success": True},
            )

        # ------------------------------------------------------------------------------ resolve
        def _resolve(self, repo_id, revision, filename, head):
            if self._failing("resolve", head):
                return
            repo = self._repo(repo_id, head)
            if repo is None:
                return
            commit = repo.resolve(revision)
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
            headers = {"X-Repo-Commit": commit.oid}
            if filename not in commit.files:
                return (
                    self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}", head)
                    or None
                )
            content = commit.files[filename]
            headers.update({"ETag": f'"{blob_etag(content)}"', "Content-Type": "application/octet-stream"})
            self._send(200, content, headers, head)

        def do_GET(self):
            self._route("GET")

        def do_HEAD(self):
            self._route("HEAD")

        def do_POST(self):
            self._route("POST")

        def do_PUT(self):
            self._body()
            self._unknown("PUT")

        def do_DELETE(self):
            self._unknown("DELETE")

    return Handler


if __name__ == "__main__":  # a hub to try by hand: HF_ENDPOINT=<printed url> HF_TOKEN=... python ...
    with FakeHub() as hub:
        print(hub.url, flush=True)
        threading.Event().wait()
