"""The simulated cloud's server side: the scheduler (pure logic), the worker pool and the protocol."""
