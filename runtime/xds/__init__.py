"""Envoy's control plane: snapshots built from the route table and discovery, served over ADS."""
