"""Deploys: signed membership, the manifest of active versions, its follower, the rehearsal."""
