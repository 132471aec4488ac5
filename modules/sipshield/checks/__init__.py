"""The security modules, one class per file, as the policy names them."""
