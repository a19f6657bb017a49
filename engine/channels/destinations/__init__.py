"""Where a channel sends messages: MLLP, file, HTTP, another channel, the patient record.

Each type is a subclass of ``base.Destination`` in its own module, with its YAML settings in
``spec`` (MLLP, file, HTTP) and ``policy.decide`` mapping a downstream ACK to an outcome.
``engine.channels.build`` picks the class. Nothing is imported here, so that reading the settings
(``engine.config``) loads no destination's implementation (the HTTP one loads twisted.web).
"""
