"""The README's Python example runs as written."""

import re

from conftest import REPO


def test_readme_python_example_runs(tmp_path, monkeypatch, shared_data):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    source = blocks[0].replace(
        'from_preset("GPT_CONFIG_124M")', 'from_preset("tiny")'
    )  # same code, 7M params
    exec(compile(source, "README.md", "exec"), {})
    assert (tmp_path / "my-gpt" / "config.json").is_file() and (
        tmp_path / "my-gpt" / "tokenizer.json"
    ).is_file()
