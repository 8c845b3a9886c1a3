"""proxy/README.md carries the generated config reference; regenerate with python -m proxy.docs."""

from pathlib import Path

from proxy.docs import reference


def test_readme_reference_is_current() -> None:
    readme = (Path(__file__).resolve().parents[2] / "proxy" / "README.md").read_text()
    assert reference() in readme, "run: python -m proxy.docs and paste it into proxy/README.md"
