"""The commands, one module per family; `revostack.cli` parses argv and dispatches to them."""
