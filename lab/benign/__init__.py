"""The benign workload generator (lab/README.md): roles, activities, a stub resolver."""
