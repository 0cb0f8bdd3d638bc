"""The harness shared by the integration tests and the benchmark: a pipeline on the embedded
stack, load clients and the expected-state model, a TCP proxy for faults, the fault load."""
