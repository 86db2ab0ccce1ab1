"""Retro-FPN (ICCV 2023): not implemented yet; see retrofpn/README.md."""
