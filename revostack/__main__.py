from revostack.cli import entry

entry()
