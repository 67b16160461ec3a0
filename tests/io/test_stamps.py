import json

from hedit.io.stamps import STAMPS, Stamps


def test_fresh_only_with_the_same_inputs_and_existing_outputs(tmp_path):
    out = tmp_path / "out.txt"
    s = Stamps(tmp_path)
    assert not s.fresh("edit", {"a": 1}, out)
    out.write_text("x")
    s.done("edit", {"a": 1}, {"sha": "f00"})
    again = Stamps(tmp_path)  # read back from stages.json
    assert again.fresh("edit", {"a": 1}, out) and again.result("edit") == {"sha": "f00"}
    assert not again.fresh("edit", {"a": 2}, out)
    out.unlink()
    assert not again.fresh("edit", {"a": 1}, out)
    assert json.loads((tmp_path / STAMPS).read_text())["edit"]["inputs"] == {"a": 1}
