"""A tiny PDF writer for tests: real PDF files (Helvetica text, pages, a title and an
outline), so the PDF parser is tested on what pypdf reads from a file, not on a mock."""

from __future__ import annotations

import io


def make_pdf(pages: list[list[str]], *, title: str | None = None,
             outline: list[tuple[str, int]] = ()) -> bytes:  # type: ignore[assignment]  # fmt: skip
    """A PDF whose page ``n`` shows the lines ``pages[n]``; ``outline``: (title, page
    index) bookmarks, added with pypdf's writer."""
    objects: list[bytes] = []
    n_pages = len(pages)
    # 1 catalog, 2 pages, 3 font, then per page: a page and its content stream
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        stream = ["BT /F1 11 Tf 72 740 Td 14 TL"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            stream.append(f"({escaped}) Tj T*")
        stream.append("ET")
        content = "\n".join(stream).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    data = out.getvalue()
    if title is None and not outline:
        return data
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    if title is not None:
        writer.add_metadata({"/Title": title})
    for name, page in outline:
        writer.add_outline_item(title=name, page_number=page)
    result = io.BytesIO()
    writer.write(result)
    return result.getvalue()
