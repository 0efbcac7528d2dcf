"""What runs on the simulated server: the fork server, the worker loop and the job's link back to the cloud.

Nothing here imports the client side of cloudsim (``client``, ``shipping``), so
the server and its workers start fast and stay clean.
"""
