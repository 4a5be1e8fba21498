"""The analyses' commands of the ``nnslicer`` command line, one module a command group.

The command line finds them through the ``nnslicer.commands`` entry points (setup.cfg): each
module's ``add_commands(subparsers)`` adds its subcommands, and is imported only when one of
them runs (or a command list is asked for). They use the command line's helpers
(:mod:`nnslicer.cli.options`) and the analyses' libraries; nothing below them imports them.
"""
