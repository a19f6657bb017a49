"""HL7 v2 to FHIR R4: the shared building blocks (``common``) and the mapping of a message to a Bundle."""
