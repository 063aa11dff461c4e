"""Assertions shared by the CLI tests."""


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit code 2, exactly one line on stderr naming the problem, no traceback.

    ``result`` is a `typer.testing.Result` or a `subprocess.CompletedProcess`.
    """
    code = getattr(result, "exit_code", None)
    code = result.returncode if code is None else code
    assert code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("diffbench: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
