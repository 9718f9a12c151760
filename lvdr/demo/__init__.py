"""Seeded demo data in each dataset's real on-disk format, with a real graded signal."""
