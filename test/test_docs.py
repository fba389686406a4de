"""The README stays true to the code it documents."""
import pathlib
import re

from facerec_msgs.msg import Face
from facerec_server.tools.param_table import table

REPO = pathlib.Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_readme_parameter_table_matches_the_declarations():
    assert table() in README, "regenerate: python -m facerec_server.tools.param_table"


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands[:2] == ["make demo", "make test"]


def test_confidence_formula_is_documented_where_it_is_defined():
    formula = "clip(1 - distance / (2 * threshold), 0, 1)"
    assert formula in README
    msg_file = (REPO / "facerec_msgs" / "msg" / "Face.msg").read_text()
    assert "clip(1 - distance / (2 * face.threshold), 0, 1)" in msg_file
    assert "confidence" in Face.get_fields_and_field_types()
