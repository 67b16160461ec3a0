from hedit.progress import bar


def test_bar_counts_bytes_and_can_be_silenced(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with bar(10, "x", "B") as b:
        b.update(4)
        assert b.n == 4 and not b.disable and b.unit_scale and b.unit_divisor == 1024
    with bar(10, "x", enabled=False) as b:
        assert b.disable
    monkeypatch.setenv("CI", "true")  # CI logs get no bar unless stderr is a terminal
    with bar(10, "x") as b:
        assert b.disable
