from hedit.demo import main


def test_demo_edits_exports_and_verifies(tmp_path, capsys):
    assert main(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.count("PASS: max abs logit diff") == 3 and "FAIL" not in out
    for name in ("edited", "lora", "ia3"):
        assert (tmp_path / name / "hedit.json").is_file()
    assert main(str(tmp_path)) == 0  # a second run reuses the model and replaces the outputs
