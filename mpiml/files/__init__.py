"""What mpiml keeps on disk: atomic writes, checkpoint files and model files (formats only;
when to write and what to resume is the run layer's job, :mod:`mpiml.run`)."""
