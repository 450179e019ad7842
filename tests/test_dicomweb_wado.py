"""WADO-RS over real HTTP: instances (default, as stored, transcoded, 406), metadata (gzip, ETag,
cache, base URL), frames as OHIF asks for them, bulk data, rendered and thumbnails, DELETE, and
index/store faults. Images are stored both uncompressed and compressed."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import EncapsulatedPDFStorage, JPEGLSLossless, generate_uid

from pacs_lite import dicomfile
from pacs_lite.archive import Archive
from pacs_lite.catalog import CatalogUnavailable
from storage import StoreUnavailable, pixels
from tests.support.dicom import make_instance, part10, read_dataset
from tests.support.http import (
    LiveServer,
    assert_json_error,
    get_json,
    serve_archive,
    split_multipart,
    stow,
    value,
)

ELE = "1.2.840.10008.1.2.1"
ITEM_TAG = b"\xfe\xff\x00\xe0"
OHIF_FRAMES_ACCEPT = [
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
]
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'

#: Images stored uncompressed and compressed, one SOP Instance UID each.
CORPUS = {
    "ct": "CT_small.dcm",  # Explicit VR LE, 16-bit
    "jls": "emri_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless, 10 frames
    "j2k": "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "jpeg": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline (lossy), YBR_FULL
    "rgb": "SC_rgb_2frame.dcm",  # Explicit VR LE, RGB, 2 frames
    "be": "ExplVR_BigEnd.dcm",  # Explicit VR big endian
    "deflate": "image_dfl.dcm",  # deflated
    "implicit": "rtdose.dcm",  # Implicit VR LE, 15 frames, 32-bit
    "sr": "test-SR.dcm",  # no pixel data
}
LOSSLESS_IMAGES = ["ct", "jls", "j2k", "rgb", "be", "deflate", "implicit"]


@dataclass
class Env:
    server: LiveServer
    archive: Archive
    originals: dict[str, Dataset]
    blobs: dict[str, bytes]
    study: str = ""
    series: list[str] = field(default_factory=list)
    sops: list[list[str]] = field(default_factory=list)
    pdf: Dataset | None = None
    icon: Dataset | None = None

    def url(self, key: str, suffix: str = "") -> str:
        ds = self.originals[key]
        return (f"{self.server.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}{suffix}")


def _pdf_instance() -> Dataset:
    ds = make_instance(pixels=False, sop_class=EncapsulatedPDFStorage, modality="DOC")
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n% test document\n%%EOF\n"
    return ds


def _icon_instance() -> Dataset:
    ds = make_instance()
    icon = Dataset()
    icon.Rows, icon.Columns, icon.SamplesPerPixel = 4, 4, 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = bytes(range(16))
    ds.IconImageSequence = [icon]
    return ds


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with serve_archive(tmp_path_factory.mktemp("wado")) as (server, archive, _config):
        blobs = {k: Path(pydicom.data.get_testdata_file(n)).read_bytes() for k, n in CORPUS.items()}
        originals = {k: pydicom.dcmread(io.BytesIO(b)) for k, b in blobs.items()}
        study = generate_uid()
        series = [generate_uid() for _ in range(3)]
        synthetic = [make_instance(study=study, series=se, instance_number=j + 1, SeriesNumber=i + 1)
                     for i, se in enumerate(series) for j in range(2)]
        pdf, icon = _pdf_instance(), _icon_instance()
        response = stow(server.base, list(blobs.values()) + [part10(ds) for ds in synthetic + [pdf, icon]])
        assert response.status_code == 200, response.text[:300]
        sops = [[ds.SOPInstanceUID for ds in synthetic if ds.SeriesInstanceUID == se] for se in series]
        originals["pdf"], originals["icon"] = pdf, icon
        yield Env(server, archive, originals, blobs, study, series, sops, pdf, icon)


# -- instances ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", LOSSLESS_IMAGES + ["jpeg"])
def test_retrieve_instance_default_is_explicit_le_with_equal_pixels(env: Env, key: str) -> None:
    ds = env.originals[key]
    back = env.server.client().retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                                 media_types=("application/dicom",))  # no transfer-syntax
    assert back.file_meta.TransferSyntaxUID == ELE
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    if key == "jpeg":  # lossy: decoded the same way, and marked lossy
        assert back.LossyImageCompression == "01"
        assert np.abs(back.pixel_array.astype(int) - ds.pixel_array.astype(int)).max() <= 2
    else:
        assert np.array_equal(back.pixel_array, ds.pixel_array)


def test_dicomweb_client_default_is_as_stored(env: Env) -> None:
    ds = env.originals["jls"]
    back = env.server.client().retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert back.file_meta.TransferSyntaxUID == JPEGLSLossless  # it sends transfer-syntax=* by default
    assert back.PixelData == ds.PixelData


@pytest.mark.parametrize("key", list(CORPUS))
def test_retrieve_as_stored_returns_the_bytes_sent(env: Env, key: str) -> None:
    response = requests.get(env.url(key), headers={"Accept": AS_STORED}, timeout=60)
    (headers, data), = split_multipart(response)
    stored_ts = str(env.originals[key].file_meta.TransferSyntaxUID)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={stored_ts}"
    assert data[:128] == b"\0" * 128
    assert bytes(dicomfile.split_part10(data)[1]) == bytes(dicomfile.split_part10(env.blobs[key])[1])


@pytest.mark.parametrize("key, target", [("ct", JPEGLSLossless), ("ct", "1.2.840.10008.1.2.4.201"),
                                         ("jls", ELE), ("j2k", JPEGLSLossless), ("rgb", "1.2.840.10008.1.2.5")])
def test_retrieve_specific_syntax_transcodes(env: Env, key: str, target: str) -> None:
    ds = env.originals[key]
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={target}'
    (headers, data), = split_multipart(requests.get(env.url(key), headers={"Accept": accept}, timeout=60))
    assert headers["content-type"] == f"application/dicom; transfer-syntax={target}"
    back = read_dataset(data)
    assert back.file_meta.TransferSyntaxUID == target
    assert np.array_equal(back.pixel_array, ds.pixel_array)


@pytest.mark.parametrize("key, target", [("ct", "1.2.840.10008.1.2.4.50"), ("jpeg", JPEGLSLossless),
                                         ("ct", "1.2.3.4")])
def test_unproducible_syntax_is_406(env: Env, key: str, target: str) -> None:
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={target}'
    assert_json_error(requests.get(env.url(key), headers={"Accept": accept}, timeout=30), 406)


def test_accept_negotiation(env: Env) -> None:
    url = env.url("ct")
    single = requests.get(url, headers={"Accept": "application/dicom"}, timeout=30)
    assert single.status_code == 200 and single.headers["Content-Type"].startswith("application/dicom")
    assert read_dataset(single.content).SOPInstanceUID == env.originals["ct"].SOPInstanceUID
    preferred = requests.get(url, timeout=30, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.9, '
                  'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'})
    (headers, _), = split_multipart(preferred)
    assert headers["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.4.80")
    for accept in ("*/*", "multipart/related", ""):
        assert requests.get(url, headers={"Accept": accept}, timeout=30).status_code == 200
    for accept in ("image/jpeg", 'multipart/related; type="application/dicom+xml"', "application/dicom; q=0",
                   'multipart/related; type="application/dicom"; transfer-syntax=1.2.x'):
        assert_json_error(requests.get(url, headers={"Accept": accept}, timeout=30), (400, 406))
    study = env.originals["ct"].StudyInstanceUID
    assert_json_error(requests.get(f"{env.server.base}/studies/{study}", headers={"Accept": "application/dicom"},
                                   timeout=30), 406)


def test_retrieve_series_and_study_stream(env: Env) -> None:
    client = env.server.client()
    series = client.retrieve_series(env.study, env.series[1])
    assert [ds.SOPInstanceUID for ds in series] == env.sops[1]
    study = client.retrieve_study(env.study)
    assert [ds.SOPInstanceUID for ds in study] == [uid for sops in env.sops for uid in sops]
    response = requests.get(f"{env.server.base}/studies/{env.study}", headers={"Accept": AS_STORED}, timeout=30,
                            stream=True)
    assert "Content-Length" not in response.headers  # streamed, not assembled
    assert len(split_multipart(response)) == 6


# -- metadata ---------------------------------------------------------------------------------------------

RENDER_TAGS = ["00080016", "00080018", "00280010", "00280011", "00280100", "00280101", "00280102", "00280103",
               "00280002", "00280004", "00200013", "00080060"]


def test_series_metadata_gzip_identity_etag(env: Env) -> None:
    ds = env.originals["ct"]
    url = f"{env.server.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
    zipped = requests.get(url, headers={"Accept": "application/dicom+json", "Accept-Encoding": "gzip"}, timeout=30,
                          stream=True)
    assert zipped.status_code == 200 and zipped.headers["Content-Encoding"] == "gzip"
    raw_gzip = zipped.raw.read(decode_content=False)
    plain = requests.get(url, headers={"Accept": "application/dicom+json", "Accept-Encoding": "identity"}, timeout=30)
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(raw_gzip) == plain.content
    doc = plain.json()
    mine = next(o for o in doc if value(o, "00080018") == ds.SOPInstanceUID)
    for tag in RENDER_TAGS:
        assert tag in mine, tag
    assert mine["7FE00010"] == {"vr": "OW", "BulkDataURI": env.url("ct", "/bulk/7FE00010")}
    etag = plain.headers["ETag"]
    assert zipped.headers["ETag"] == etag
    again = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
    assert again.status_code == 304 and again.content == b""


def test_metadata_cache_and_version(env: Env) -> None:
    url = f"{env.server.base}/studies/{env.study}/series/{env.series[0]}/metadata"
    cache = env.server.app.extensions["pacs_lite.web"].metadata_cache
    first = get_json(url)
    hits = cache.hits
    assert get_json(url) == first
    assert cache.hits == hits + 1
    etag = requests.get(url, timeout=30).headers["ETag"]
    added = make_instance(study=env.study, series=env.series[0], instance_number=3)
    assert stow(env.server.base, [part10(added)]).status_code == 200
    changed = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert len(changed.json()) == 3
    env.sops[0].append(added.SOPInstanceUID)


def test_study_and_instance_metadata(env: Env) -> None:
    study = get_json(f"{env.server.base}/studies/{env.study}/metadata")
    assert sorted(value(o, "00080018") for o in study) == sorted(u for s in env.sops for u in s)
    inst = get_json(env.url("ct", "/metadata"))
    assert len(inst) == 1 and value(inst[0], "00080018") == env.originals["ct"].SOPInstanceUID
    sr = get_json(env.url("sr", "/metadata"))
    assert "0040A730" in sr[0] and "Value" in sr[0]["0040A730"]  # SR content inline
    multi = get_json(env.url("jls", "/metadata"))[0]
    assert value(multi, "00280008") == 10
    assert_json_error(requests.get(env.url("ct", "/metadata"), headers={"Accept": "application/dicom+xml"},
                                   timeout=30), 406)


def test_metadata_base_url_follows_the_request_host(env: Env) -> None:
    ds = env.originals["ct"]
    url = f"{env.server.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
    other = requests.get(url, headers={"Host": "pacs.example:8443"}, timeout=30).json()
    uri = next(o for o in other if value(o, "00080018") == ds.SOPInstanceUID)["7FE00010"]["BulkDataURI"]
    assert uri.startswith("http://pacs.example:8443/dicomweb/studies/")
    bad = requests.get(url, headers={"Host": 'evil"},{"x'}, timeout=30)
    assert bad.status_code == 400


def test_unknown_resources_are_404(env: Env) -> None:
    ds, unknown = env.originals["ct"], generate_uid()
    base = env.server.base
    for url in (f"{base}/studies/{unknown}", f"{base}/studies/{unknown}/metadata",
                f"{base}/studies/{ds.StudyInstanceUID}/series/{unknown}/metadata",
                f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{unknown}",
                f"{base}/studies/{unknown}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1",
                f"{base}/studies/{unknown}/rendered", f"{base}/nonsense"):
        assert_json_error(requests.get(url, timeout=30), 404)


# -- frames ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", OHIF_FRAMES_ACCEPT)
def test_ohif_frames_request_compressed(env: Env, accept: str) -> None:
    response = requests.get(env.url("jls", "/frames/1"), headers={"Accept": accept}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith('multipart/related; type="application/octet-stream"')
    (headers, frame), = split_multipart(response)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={JPEGLSLossless}"
    assert not frame.startswith(ITEM_TAG) and frame.startswith(b"\xff\xd8")
    assert frame == pixels.get_frame(env.originals["jls"], 0)


@pytest.mark.parametrize("key", ["ct", "be", "deflate", "implicit", "rgb"])
def test_ohif_frames_request_native(env: Env, key: str) -> None:
    ds = env.originals[key]
    response = requests.get(env.url(key, "/frames/1"), headers={"Accept": OHIF_FRAMES_ACCEPT[0]}, timeout=30)
    (headers, frame), = split_multipart(response)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    raw = np.frombuffer(ds.PixelData[:size], dtype=f"{'<' if ds.is_little_endian else '>'}u{ds.BitsAllocated // 8}")
    assert frame == raw.astype(raw.dtype.newbyteorder("<")).tobytes()  # native frames are little endian


def test_several_frames_and_default_syntax(env: Env) -> None:
    ds = env.originals["jls"]
    stored = requests.get(env.url("jls", "/frames/1,3,5"), headers={"Accept": OHIF_FRAMES_ACCEPT[1]}, timeout=30)
    assert [f for _, f in split_multipart(stored)] == [pixels.get_frame(ds, i) for i in (0, 2, 4)]
    default = requests.get(env.url("jls", "/frames/2,10"), timeout=30,
                           headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    parts = split_multipart(default)
    assert [h["content-type"] for h, _ in parts] == [f"application/octet-stream; transfer-syntax={ELE}"] * 2
    assert [f for _, f in parts] == [ds.pixel_array[1].tobytes(), ds.pixel_array[9].tobytes()]
    client_frames = env.server.client().retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [4], media_types=(("application/octet-stream", "*"),))
    assert client_frames == [pixels.get_frame(ds, 3)]


def test_frames_as_image_media_types(env: Env) -> None:
    jls = requests.get(env.url("jls", "/frames/1,2"), headers={"Accept": 'multipart/related; type="image/jls"'},
                       timeout=30)
    assert [h["content-type"] for h, _ in split_multipart(jls)] == [f"image/jls; transfer-syntax={JPEGLSLossless}"] * 2
    single = requests.get(env.url("jls", "/frames/3"), headers={"Accept": "image/jls"}, timeout=30)
    assert single.headers["Content-Type"].startswith("image/jls") and single.content == pixels.get_frame(
        env.originals["jls"], 2)
    assert_json_error(requests.get(env.url("jls", "/frames/1,2"), headers={"Accept": "image/jls"}, timeout=30), 406)
    htj2k = requests.get(env.url("ct", "/frames/1"), headers={"Accept": 'multipart/related; type="image/jphc"'},
                         timeout=60)
    (headers, frame), = split_multipart(htj2k)
    assert headers["content-type"] == "image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201"
    decoded = imagecodecs.htj2k_decode(frame).astype(np.int32)
    assert np.array_equal(decoded, env.originals["ct"].pixel_array.astype(np.int32))
    j2k = requests.get(env.url("j2k", "/frames/1"), headers={"Accept": 'multipart/related; type="image/jp2"'},
                       timeout=30)
    (headers, frame), = split_multipart(j2k)
    assert headers["content-type"] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"
    assert frame == pixels.get_frame(env.originals["j2k"], 0)


@pytest.mark.parametrize("frames, status", [("0", 400), ("-1", 400), ("1,abc", 400), ("1,,2", 400), ("999999", 404),
                                            ("11", 404), ("1,0", 400), ("9" * 12, 400)])
def test_bad_frame_numbers(env: Env, frames: str, status: int) -> None:
    response = requests.get(env.url("jls", f"/frames/{frames}"), headers={"Accept": OHIF_FRAMES_ACCEPT[0]}, timeout=30)
    assert_json_error(response, status)


def test_frames_unacceptable(env: Env) -> None:
    for accept in ("image/gif", 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50'):
        assert_json_error(requests.get(env.url("ct", "/frames/1"), headers={"Accept": accept}, timeout=30), 406)
    assert_json_error(requests.get(env.url("sr", "/frames/1"), headers={"Accept": OHIF_FRAMES_ACCEPT[0]},
                                   timeout=30), (404, 406))


# -- bulk data ------------------------------------------------------------------------------------------------


def _bulk_uri(env: Env, key: str, tag: str = "7FE00010") -> str:
    meta = get_json(env.url(key, "/metadata"))[0]
    return meta[tag]["BulkDataURI"]


def test_bulk_pixel_data(env: Env) -> None:
    uri = _bulk_uri(env, "ct")
    single = requests.get(uri, timeout=30)
    assert single.headers["Content-Type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert single.content == env.originals["ct"].PixelData
    multi = requests.get(uri, headers={"Accept": 'multipart/related; type="application/octet-stream"'}, timeout=30)
    assert [body for _, body in split_multipart(multi)] == [env.originals["ct"].PixelData]
    frames = split_multipart(requests.get(_bulk_uri(env, "jls"), timeout=30))
    assert [body for _, body in frames] == [pixels.get_frame(env.originals["jls"], i) for i in range(10)]


def test_bulk_nested_and_documents(env: Env) -> None:
    meta = get_json(env.url("icon", "/metadata"))[0]
    uri = meta["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    assert uri.endswith("/bulk/00880200/0/7FE00010")
    assert requests.get(uri, timeout=30).content == bytes(range(16))
    pdf_uri = _bulk_uri(env, "pdf", "00420011")
    response = requests.get(pdf_uri, headers={"Accept": "application/pdf"}, timeout=30)
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.content.rstrip(b"\0") == env.pdf.EncapsulatedDocument.rstrip(b"\0")
    assert env.server.client().retrieve_bulkdata(pdf_uri)[0].startswith(b"%PDF")
    base = env.url("icon", "/bulk/")
    assert_json_error(requests.get(base + "ZZZ", timeout=30), 400)
    assert_json_error(requests.get(base + "00880200/x/7FE00010", timeout=30), 400)
    assert_json_error(requests.get(base + "00880200/5/7FE00010", timeout=30), 404)
    assert_json_error(requests.get(base + "00100010", timeout=30), 404)
    assert_json_error(requests.get(uri, headers={"Accept": "image/png"}, timeout=30), 406)


# -- rendered and thumbnails -------------------------------------------------------------------------------


def _image(response: requests.Response, fmt: str) -> Image.Image:
    assert response.status_code == 200, response.text[:300]
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == fmt
    return image


def test_rendered_instance_jpeg_png(env: Env) -> None:
    assert _image(requests.get(env.url("ct", "/rendered"), timeout=30), "JPEG").size == (128, 128)
    png = _image(requests.get(env.url("ct", "/rendered"), headers={"Accept": "image/png"}, timeout=30), "PNG")
    assert png.size == (128, 128)
    fitted = requests.get(env.url("ct", "/rendered"), params={"window": "40,400,linear", "viewport": "64,32",
                                                             "quality": "50"}, timeout=30)
    assert _image(fitted, "JPEG").size == (32, 32)
    wide = _image(requests.get(env.url("jpeg", "/rendered"), params={"viewport": "50,100"}, timeout=30), "JPEG")
    assert wide.size == (50, 50) and wide.mode == "RGB"
    frame = _image(requests.get(env.url("jls", "/frames/7/rendered"), headers={"Accept": "image/png"}, timeout=30),
                   "PNG")
    assert frame.size == (64, 64)
    several = requests.get(env.url("jls", "/frames/1,2/rendered"),
                           headers={"Accept": 'multipart/related; type="image/jpeg"'}, timeout=30)
    assert len(split_multipart(several)) == 2


def test_rendered_dicomweb_client(env: Env) -> None:
    ds = env.originals["j2k"]
    client = env.server.client()
    data = client.retrieve_instance_rendered(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                             media_types=("image/png",))
    assert Image.open(io.BytesIO(data)).format == "PNG"


def test_study_series_rendered_and_thumbnails(env: Env) -> None:
    ds = env.originals["ct"]
    study = f"{env.server.base}/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    for url in (f"{study}/rendered", f"{series}/rendered"):
        _image(requests.get(url, headers={"Accept": "image/jpeg"}, timeout=30), "JPEG")
    for url in (f"{study}/thumbnail", f"{series}/thumbnail", env.url("jls", "/thumbnail"),
                env.url("jls", "/frames/2/thumbnail")):
        thumb = _image(requests.get(url, timeout=30), "JPEG")
        assert max(thumb.size) <= 128
    small = _image(requests.get(env.url("ct", "/thumbnail"), params={"viewport": "32,32"}, timeout=30), "JPEG")
    assert small.size == (32, 32)


def test_rendered_documents_and_errors(env: Env) -> None:
    pdf = requests.get(env.url("pdf", "/rendered"), headers={"Accept": "application/pdf"}, timeout=30)
    assert pdf.headers["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert pdf.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert requests.get(env.url("pdf", "/rendered"), timeout=30).headers["Content-Type"] == "application/pdf"
    assert_json_error(requests.get(env.url("pdf", "/rendered"), headers={"Accept": "image/jpeg"}, timeout=30), 404)
    assert_json_error(requests.get(env.url("sr", "/rendered"), timeout=30), 404)
    for params in ({"window": "abc"}, {"window": "40,0"}, {"window": "40,400,cubic"}, {"viewport": "0,10"},
                   {"viewport": "10"}, {"quality": "101"}, {"quality": "x"}, {"frob": "1"}):
        assert_json_error(requests.get(env.url("ct", "/rendered"), params=params, timeout=30), 400)
    assert_json_error(requests.get(env.url("ct", "/rendered"), headers={"Accept": "image/gif"}, timeout=30), 406)
    assert_json_error(requests.get(env.url("jls", "/frames/11/rendered"), timeout=30), 404)


# -- DELETE ---------------------------------------------------------------------------------------------


def test_delete_instance_series_study(env: Env) -> None:
    base, catalog, store = env.server.base, env.archive.catalog, env.archive.store
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    datasets = [make_instance(study=study, series=se) for se in series for _ in range(2)]
    assert stow(base, [part10(ds) for ds in datasets]).status_code == 200
    keys = {i.sop_instance_uid: i.object_key for i in catalog.instances(study)}
    first = datasets[0]
    url = f"{base}/studies/{study}/series/{series[0]}/instances/{first.SOPInstanceUID}"
    assert requests.delete(url, timeout=30).status_code == 204
    assert not store.exists(keys[first.SOPInstanceUID])
    assert_json_error(requests.get(url, timeout=30), 404)
    assert_json_error(requests.delete(url, timeout=30), 404)
    assert len(get_json(f"{base}/studies/{study}/instances")) == 3
    assert requests.delete(f"{base}/studies/{study}/series/{series[1]}", timeout=30).status_code == 204
    assert len(get_json(f"{base}/studies/{study}/instances")) == 1
    assert requests.delete(f"{base}/studies/{study}", timeout=30).status_code == 204
    assert get_json(f"{base}/studies", params={"StudyInstanceUID": study}) == []
    assert not any(store.exists(k) for k in keys.values())
    assert_json_error(requests.delete(f"{base}/studies/{study}", timeout=30), 404)


# -- faults ----------------------------------------------------------------------------------------------


def test_store_down_is_503_and_index_still_answers(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_args: object, **_kwargs: object) -> bytes:
        raise StoreUnavailable("simulated outage")

    monkeypatch.setattr(env.archive.store, "get", down)
    response = requests.get(env.url("ct"), timeout=30)
    assert_json_error(response, 503)
    assert response.headers["Retry-After"]
    assert_json_error(requests.get(env.url("ct", "/frames/1"), timeout=30), 503)
    assert get_json(env.url("ct", "/metadata"))  # metadata comes from the index
    assert get_json(f"{env.server.base}/studies")


def test_index_down_is_503(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_args: object, **_kwargs: object) -> None:
        raise CatalogUnavailable("simulated outage")

    for name in ("find", "instances", "series_metadata"):
        monkeypatch.setattr(env.archive.catalog, name, down)
    for url in (f"{env.server.base}/studies", env.url("ct"), env.url("ct", "/metadata"),
                f"{env.server.base}/studies/{env.study}/metadata"):
        response = requests.get(url, timeout=30)
        assert_json_error(response, 503)
        assert response.headers["Retry-After"]


def test_corrupt_object_is_an_error_not_data(env: Env, tmp_path: Path) -> None:
    """D10: a flipped byte in the store is detected by the checksum and reported."""
    inst = env.archive.catalog.instances(sop_uid=env.originals["rgb"].SOPInstanceUID)[0]
    path = Path(env.archive.config.path("storage", "path")) / inst.object_key
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-10] + bytes([original[-10] ^ 0xFF]) + original[-9:])
        response = requests.get(env.url("rgb"), headers={"Accept": AS_STORED}, timeout=30)
        doc = assert_json_error(response, 500)
        assert "corrupt" in doc["reason"]
    finally:
        path.write_bytes(original)
    assert requests.get(env.url("rgb"), headers={"Accept": AS_STORED}, timeout=30).status_code == 200


def test_encapsulated_multiframe_built_here(env: Env) -> None:
    """A JPEG-LS instance built from frames: frames come back exactly as encoded."""
    ds = make_instance(rows=16, columns=16, frames=3)
    arr = ds.pixel_array
    encoded = [imagecodecs.jpegls_encode(arr[i]) for i in range(3)]
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    assert stow(env.server.base, [part10(ds)]).status_code == 200
    url = (f"{env.server.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/1,2,3")
    parts = split_multipart(requests.get(url, headers={"Accept": OHIF_FRAMES_ACCEPT[0]}, timeout=30))
    assert [body for _, body in parts] == [e + b"\0" * (len(e) % 2) for e in encoded]  # even-length fragments


def test_accept_query_parameter_replaces_the_header(env: Env) -> None:
    thumb = requests.get(env.url("ct", "/thumbnail"), params={"accept": "image/png"}, timeout=30)
    assert _image(thumb, "PNG")
    frames = requests.get(env.url("jls", "/frames/1"), params={"accept": OHIF_FRAMES_ACCEPT[0]}, timeout=30)
    (headers, _), = split_multipart(frames)
    assert headers["content-type"].endswith(JPEGLSLossless)


def test_dicomweb_client_defaults_are_answered_by_every_retrieve_method(env: Env) -> None:
    """dicomweb-client's default Accept headers (``type="*/*"`` for frames and bulk data) are never 406."""
    client = env.server.client()
    jls, ct = env.originals["jls"], env.originals["ct"]
    jls_uids = (jls.StudyInstanceUID, jls.SeriesInstanceUID, jls.SOPInstanceUID)
    ct_uids = (ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)

    assert client.retrieve_instance(*jls_uids).SOPInstanceUID == jls.SOPInstanceUID
    assert [d.SOPInstanceUID for d in client.retrieve_series(*jls_uids[:2])] == [jls.SOPInstanceUID]
    assert {d.SOPInstanceUID for d in client.retrieve_study(env.study)} == {s for series in env.sops for s in series}
    # frames: the default media type of the resource, uncompressed octet-stream (PS3.18 8.7.3)
    assert client.retrieve_instance_frames(*jls_uids, [1, 3]) == [jls.pixel_array[0].tobytes(),
                                                                   jls.pixel_array[2].tobytes()]
    assert client.retrieve_instance_frames(*ct_uids, [1]) == [ct.pixel_array.tobytes()]
    assert list(client.iter_instance_frames(*jls_uids, [2])) == [jls.pixel_array[1].tobytes()]

    (study_meta,) = [m for m in client.retrieve_study_metadata(ct.StudyInstanceUID)
                     if m["00080018"]["Value"] == [ct.SOPInstanceUID]]
    assert client.retrieve_series_metadata(*ct_uids[:2])[0]["00080018"]["Value"] == [ct.SOPInstanceUID]
    instance_meta = client.retrieve_instance_metadata(*ct_uids)
    assert instance_meta == study_meta
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so the URI it is served names port 80
    assert instance_meta["7FE00010"]["BulkDataURI"].endswith("/bulk/7FE00010")
    (bulk,) = client.retrieve_bulkdata(env.url("ct", "/bulk/7FE00010"))
    assert bulk == ct.pixel_array.tobytes()

    jpeg_start = b"\xff\xd8"
    assert client.retrieve_instance_rendered(*jls_uids).startswith(jpeg_start)
    assert client.retrieve_instance_frames_rendered(*jls_uids, [2]).startswith(jpeg_start)
    assert client.retrieve_series_rendered(*jls_uids[:2]).startswith(jpeg_start)
