"""Operations tooling of volttron-dr: site specifications, installing a site onto a platform, and the
client used by tests and scripts to talk to a running platform. Runs as root or as a normal user; every
platform command goes through scripts/vctl and scripts/platform (which run as the service user)."""
