"""The cfrbench application: the command line (`cfrbench.cli`) and the main job
(`cfrbench.mainjob`).

It sits above every library layer (relay < testbed < topologies < benchmarks < labs), so it
may use them all while none of them may import it (the contracts in `.importlinter`,
checked by `lint-imports` in `make test`).
"""
