"""A simulated UNI/TS 11291 gas meter fleet, for trying the SAC, for tests and benchmarks.

* :mod:`~sac.simulator.meter` -- one meter: its COSEM objects and its life over time
* :mod:`~sac.simulator.settings` -- the settings the SAC writes to a meter (issue 22)
* :mod:`~sac.simulator.session` -- the Twisted protocol of a meter's connection (push and
  listen)
* :mod:`~sac.simulator.fleet` -- many meters in one process, their keys as the SAC imports them
* :mod:`~sac.simulator.cli` -- ``sac-simulate``
"""
