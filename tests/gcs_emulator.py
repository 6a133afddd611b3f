"""``python tests/gcs_emulator.py start --port P ...``: gcp-storage-emulator with one thing real Cloud Storage does
and the emulator does not: a media download carries the object's generation (``x-goog-generation``).

tensorstore (orbax's array writer) reads that header to make conditional writes (``ifGenerationMatch``) when it
updates an OCDBT manifest; without it a checkpoint of more than one array fails with "Malformed StorageGeneration".
"""
import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    _download(request, response, storage, *args, **kwargs)
    try:  # headers are sent when the response closes, after this handler returns
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", 1))
    except Exception:  # not found: the original handler has already answered 404
        pass


objects.download = download  # before the server module builds its routing table from it

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main
    sys.exit(main())
