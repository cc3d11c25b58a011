using System.Net;
using System.Net.Http.Headers;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>
/// A request body read from a caller's seekable stream, from where the stream stood when the
/// content was made. Unlike <see cref="StreamContent"/> it never disposes the stream, and it can be
/// sent again when a 401 makes the request be repeated with credentials.
/// </summary>
internal sealed class BlobContent : HttpContent
{
    private readonly Stream _source;
    private readonly long _start;

    public BlobContent(Stream source)
    {
        if (!source.CanSeek)
        {
            throw new ArgumentException("A blob to push must be a seekable stream.", nameof(source));
        }

        _source = source;
        _start = source.Position;
        Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
    }

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        await SerializeToStreamAsync(stream, context, CancellationToken.None).ConfigureAwait(false);

    protected override async Task SerializeToStreamAsync(
        Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        _source.Position = _start;
        await _source.CopyToAsync(stream, cancellationToken).ConfigureAwait(false);
    }

    protected override bool TryComputeLength(out long length)
    {
        length = _source.Length - _start;
        return true;
    }
}
