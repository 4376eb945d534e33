"""The benchmark harness behind ``ebjdat bench`` and the pytest suites in bench/.

timing (timers, ceilings, environment), formulas (bytes and FLOPs), the suites (suite_ops, suite_loops,
suite_step), profiling (ranges and traces), cli (the command) and report (markdown
table and PNG plot from result JSON).
"""
