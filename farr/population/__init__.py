"""Population health view: risk by patient group, inequality, planning projections, validation."""
