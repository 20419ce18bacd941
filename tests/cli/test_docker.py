"""`engines docker` (pipeline/cli/docker.py): every option has its --help text."""
from __future__ import annotations


def test_every_docker_option_has_help():
    import pipeline.cli.docker as cd
    for cmd in cd.docker_group.commands.values():
        for param in cmd.params:
            if param.param_type_name == "option":
                assert param.help, f"engines docker {cmd.name} {param.opts} has no help"
