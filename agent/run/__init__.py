"""Running a job: config checks, shared run helpers, checkpoints, logging, the representation and online loops, evaluation."""
