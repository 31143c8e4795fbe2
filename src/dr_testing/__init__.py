"""Test fixtures for volttron-dr and the sites built with it: a real VOLTTRON 11 platform (see `plugin`)."""
