"""Helpers and fakes that test packages share; fixtures live in the conftest.py files.

messages (NewMessage builders), store (expected rows, locks, schema comparison), driver (the
driver tests' tables), record (journey samples, HL7 text, Feeder), web (credentials, HTTP client),
harness (the engine on loopback, waiting), process (the engine as a process of its own), channels
(a store in memory, scripted destinations), outbound and downstream (what destinations send, a
partner that answers), reactor (inline threads), config, bench, corpus (the sample corpus's
manifest), certs (a throwaway CA), listeners (a frame handler, event counts, raw socket reads).
"""
