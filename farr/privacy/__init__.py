"""Privacy protections shared by the stages: disclosure control of released tables and more."""
