"""Fuzzing: mutated and random frames into the decoders and, over loopback TCP, into the push
listener of a real ``twistd sac`` and the polling client (``python -m tests.fuzz``)."""
