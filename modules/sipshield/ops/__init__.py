"""What operators run: the ``sipshield`` command, nft-sync, tls.cfg rendering."""
