"""ROS side of ``facerec_server.params``: a ParamSpec as an rcl_interfaces ParameterDescriptor."""
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
