"""The composition of seriatim's processes: the `seriatim` command, the process tree of
`seriatim up`, the worker process and the one metrics endpoint of them all.

The only package that knows `gateway`, `supervision` and `actors` together; none of them
imports it.
"""
