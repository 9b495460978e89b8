"""Running liveroom: the CLI, the roles of one process, the timer scheduler, a private Redis."""
