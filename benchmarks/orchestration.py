"""Orchestration benchmark: what the SMoA graph itself costs, with fake models only.

The measurement lives in ``smoa_graph.bench.orchestration`` (its docstring says what it prints).

    .venv/bin/python benchmarks/orchestration.py [--quick] [--json report.json]
"""

from smoa_graph.bench.orchestration import main

if __name__ == "__main__":
    main()
