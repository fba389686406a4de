"""Print the server's parameter table (markdown) from facerec_server.params.

The README's table is this output; test/test_docs.py fails when they differ:
``python -m facerec_server.tools.param_table``
"""
from facerec_server import params


def _default(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(f'"{item}"' for item in value) + "]"
    return str(value)


def _bound(value) -> str:
    """A range end as written in the code: 4096, 0.05, 1000000000 (never 1e+09)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def table() -> str:
    rows = ["| parameter | default | range | meaning |", "| --- | --- | --- | --- |"]
    for spec in params.SPECS:
        if spec.choices:
            allowed = " / ".join(spec.choices)
        elif spec.low is not None:
            allowed = f"{_bound(spec.low)} .. {_bound(spec.high)}"
        else:
            allowed = ""
        note = " *Start-up only.*" if spec.read_only else ""
        rows.append(f"| `{spec.name}` | `{_default(spec.default)}` | {allowed} | "
                    f"{spec.description}.{note} |")
    return "\n".join(rows)


def main() -> int:
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
