"""The cloudsim pytest plugin: run a project's tests with every ``cloud`` call going through the simulator."""
