"""The one JSON-lines reader/appender behind bench's and study's --resume."""

from __future__ import annotations

import pytest

from edgemed.errors import InputError
from edgemed.fileio import append_jsonl, read_jsonl


def test_a_torn_tail_is_cut_so_a_resumed_run_can_append_and_resume_again(tmp_path):
    path = tmp_path / "rows.jsonl"
    append_jsonl(path, {"key": "a"})
    with open(path, "a") as f:
        f.write('{"key": "b", "sta\n')  # killed mid-write
    assert read_jsonl(path) == [{"key": "a"}]  # read-only: the file is left as it is
    assert read_jsonl(path, repair=True) == [{"key": "a"}]
    append_jsonl(path, {"key": "c"})
    assert read_jsonl(path) == [{"key": "a"}, {"key": "c"}]


def test_a_damaged_line_inside_is_refused_naming_it(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"key": "a"}\n[1, 2]\n{"key": "c"}\n')
    with pytest.raises(InputError, match="line 2 is not a JSON record"):
        read_jsonl(path, repair=True)
    assert read_jsonl(tmp_path / "absent.jsonl") == []
