"""Field and component names per version, from hl7apy."""

from engine.hl7.names import component_name, field_name, library_version


def test_field_and_component_names_come_from_the_version():
    """PID-5 is the patient name and its first component the family name, in 2.5 and 2.3."""
    assert field_name("2.5", "PID", 5) == "Patient Name"
    assert component_name("2.5", "PID", 5, 1) == "Family Name"
    assert field_name("2.3", "MSH", 9) == "Message Type"
    assert field_name("2.5", "MSH", 1) == "Field Separator"


def test_unknown_segments_and_positions_have_no_name():
    """Z segments, positions past the end and components of a simple field are None, not errors."""
    assert field_name("2.5", "ZPD", 1) is None
    assert field_name("2.5", "PID", 99) is None
    assert field_name("2.5", "PID", 0) is None
    assert component_name("2.5", "PID", 1, 1) is None


def test_versions_hl7apy_lacks_fall_back_to_the_nearest():
    """2.5.1 is its own library; 2.3.2 uses 2.3; an unknown version uses 2.5."""
    assert library_version("2.5.1") == "2.5.1"
    assert library_version("2.3.2") == "2.3"
    assert library_version("9.9") == "2.5"
    assert field_name("9.9", "OBX", 5) == "Observation Value"
