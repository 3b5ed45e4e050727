"""Thin pools: space decisions, and the guard process that keeps a pool from filling during a backup."""
