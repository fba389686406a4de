"""ROS side of ``facerec_server.params``: a ParamSpec as an rcl_interfaces ParameterDescriptor."""
import re

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from facerec_server.params import ParamSpec

_KINDS = {
    "bool": ParameterType.PARAMETER_BOOL,
    "int": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
    "string_array": ParameterType.PARAMETER_STRING_ARRAY,
    "int_array": ParameterType.PARAMETER_INTEGER_ARRAY,
}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Description, type, read-only flag, choices and numeric range of one parameter."""
    desc = ParameterDescriptor(description=spec.description, type=_KINDS[spec.kind],
                               read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.kind == "int" and spec.low is not None and spec.high is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                           step=1)]
    if spec.kind == "double" and spec.low is not None and spec.high is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                        to_value=float(spec.high), step=0.0)]
    return desc


def declare(node, spec: ParamSpec):
    """Declare ``spec`` on ``node``; a start-up value of the wrong type or out of range raises
    ValueError with one line naming the parameter, the value and what is allowed."""
    from rclpy.exceptions import InvalidParameterValueException, ParameterException
    try:
        return node.declare_parameter(spec.name, spec.default, descriptor(spec))
    except InvalidParameterValueException as exc:
        match = re.search(r"value \((.*?)\) for parameter", str(exc))
        given = match.group(1) if match else "the given value"
        allowed = (f"use {spec.low}..{spec.high}" if spec.low is not None
                   and spec.high is not None else "see its description")
        raise ValueError(f"{spec.name} {given} is out of range: {allowed} "
                         f"({spec.description})") from None
    except ParameterException as exc:  # e.g. a string where an integer is declared
        raise ValueError(f"{spec.name}: {exc}") from None
