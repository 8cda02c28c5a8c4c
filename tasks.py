"""My-SaaS-Chat deployment suite: the root collection. Tasks live in tasks/<area>.py."""

import os

# invoke loads this file as the module `tasks`, which would hide the tasks/ package; a __path__
# makes `tasks.<area>` importable from here too, the same modules `import tasks.env` gives.
__path__ = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")]

from invoke import Collection

from tasks import (
    alerts,
    backup,
    certs,
    ci,
    cluster,
    deploy,
    dr,
    env,
    images,
    lock,
    nginx,
    preflight,
    timeline,
)

ns = Collection()
ns.add_collection(env.ns)
ns.add_collection(images.ns)
ns.add_collection(nginx.ns)
ns.add_collection(certs.ns)
ns.add_collection(lock.ns)
ns.add_collection(cluster.ns)
ns.add_collection(alerts.ns)
ns.add_collection(backup.ns)
ns.add_collection(dr.ns)
ns.add_collection(ci.ns)
ns.add_collection(preflight.ns)
ns.add_task(backup.restore_task)
ns.add_task(timeline.timeline)
for root_task in deploy.ns.tasks.values():  # deploy, smoke, status, logs: verbs of their own
    ns.add_task(root_task)
