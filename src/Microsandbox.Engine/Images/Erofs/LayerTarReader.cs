using System.Buffers.Text;
using System.Formats.Tar;
using System.Text;

namespace Microsandbox.Engine.Images.Erofs;

/// <summary>
/// Reads a layer tar with <see cref="TarReader"/> and recovers each entry's xattrs
/// (<c>SCHILY.xattr.*</c> PAX records) byte for byte.
/// </summary>
/// <remarks>
/// TarReader decodes PAX values as UTF-8 text, which turns binary values such as
/// <c>security.capability</c> into replacement characters. The reader therefore records the raw
/// bytes TarReader consumes while it reads an entry's headers and parses the PAX records itself.
/// Only headers are recorded: the previous entry's data is drained before the next read starts.
/// </remarks>
internal sealed class LayerTarReader : IAsyncDisposable
{
    private const int TarBlockSize = 512;
    private const string XattrKeyPrefix = "SCHILY.xattr.";
    private readonly RecordingStream _source;
    private readonly TarReader _reader;
    private TarEntry? _current;

    /// <summary>Reads from an uncompressed tar stream, which stays open.</summary>
    public LayerTarReader(Stream tar)
    {
        _source = new RecordingStream(tar);
        _reader = new TarReader(_source, leaveOpen: true);
    }

    /// <summary>The next entry and its xattrs, or null at the end of the archive.</summary>
    public async Task<(TarEntry Entry, Dictionary<string, byte[]> Xattrs)?> NextAsync(
        CancellationToken cancellationToken)
    {
        if (_current?.DataStream is { } unread)
        {
            await unread.CopyToAsync(Stream.Null, cancellationToken).ConfigureAwait(false);
        }

        _source.StartRecording();
        TarEntry? entry;
        try
        {
            entry = await _reader.GetNextEntryAsync(copyData: false, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _source.StopRecording();
        }

        _current = entry;
        if (entry is null)
        {
            return null;
        }

        var xattrs = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        if (entry is PaxTarEntry pax && pax.ExtendedAttributes.Keys.Any(IsXattrKey))
        {
            if (!ParseHeaderXattrs(_source.RecordingStart, _source.Recorded, xattrs))
            {
                // Not expected, as TarReader read the same records; the text values are the best left.
                foreach (var (key, value) in pax.ExtendedAttributes)
                {
                    if (IsXattrKey(key))
                    {
                        xattrs[key[XattrKeyPrefix.Length..]] = Encoding.UTF8.GetBytes(value);
                    }
                }
            }
        }

        return (entry, xattrs);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _reader.DisposeAsync().ConfigureAwait(false);
        await _source.DisposeAsync().ConfigureAwait(false);
    }

    private static bool IsXattrKey(string key) =>
        key.StartsWith(XattrKeyPrefix, StringComparison.Ordinal) && key.Length > XattrKeyPrefix.Length;

    /// <summary>
    /// Walks the header blocks recorded for one entry (PAX 'x', GNU 'L'/'K', then the entry's
    /// own header) and collects the xattr records of its PAX header.
    /// </summary>
    private static bool ParseHeaderXattrs(
        long start, ReadOnlySpan<byte> recorded, Dictionary<string, byte[]> xattrs)
    {
        bool found = false;
        // Headers start on 512-byte boundaries of the whole archive; the recording may begin
        // inside the padding after the previous entry's data.
        int at = (int)(((start + TarBlockSize - 1) / TarBlockSize * TarBlockSize) - start);
        while (at + TarBlockSize <= recorded.Length)
        {
            var header = recorded.Slice(at, TarBlockSize);
            byte type = header[156];
            if (type is not ((byte)'x' or (byte)'L' or (byte)'K')
                || !TryParseSize(header.Slice(124, 12), out long size)
                || size > recorded.Length - at - TarBlockSize)
            {
                break;
            }

            if (type == (byte)'x')
            {
                found |= ParsePaxRecords(recorded.Slice(at + TarBlockSize, (int)size), xattrs);
            }

            at += TarBlockSize + (int)((size + TarBlockSize - 1) / TarBlockSize * TarBlockSize);
        }

        return found;
    }

    /// <summary>Parses "LENGTH key=value\n" records; the value keeps its raw bytes.</summary>
    private static bool ParsePaxRecords(ReadOnlySpan<byte> data, Dictionary<string, byte[]> xattrs)
    {
        bool found = false;
        int position = 0;
        while (position < data.Length)
        {
            var rest = data[position..];
            int space = rest.IndexOf((byte)' ');
            if (space <= 0 || !Utf8Parser.TryParse(rest[..space], out int length, out int consumed)
                || consumed != space || length <= space + 1 || length > rest.Length
                || rest[length - 1] != (byte)'\n')
            {
                break;
            }

            var record = rest[(space + 1)..(length - 1)];
            int equals = record.IndexOf((byte)'=');
            if (equals > 0)
            {
                string key = Encoding.UTF8.GetString(record[..equals]);
                if (IsXattrKey(key))
                {
                    // A later record for the same key wins, as PAX specifies.
                    xattrs[key[XattrKeyPrefix.Length..]] = record[(equals + 1)..].ToArray();
                    found = true;
                }
            }

            position += length;
        }

        return found;
    }

    /// <summary>A header size field: octal text, or base-256 when the first byte's high bit is set.</summary>
    private static bool TryParseSize(ReadOnlySpan<byte> field, out long size)
    {
        size = 0;
        if ((field[0] & 0x80) != 0)
        {
            for (int i = 1; i < field.Length; i++)
            {
                if (size > (long.MaxValue >> 8))
                {
                    return false;
                }

                size = (size << 8) | field[i];
            }

            return true;
        }

        bool digits = false;
        foreach (byte b in field)
        {
            if (b is (byte)' ' or 0)
            {
                if (digits)
                {
                    break;
                }

                continue;
            }

            if (b is < (byte)'0' or > (byte)'7' || size > (long.MaxValue >> 3))
            {
                return false;
            }

            size = (size << 3) | (long)(b - '0');
            digits = true;
        }

        return digits;
    }

    /// <summary>A forward-only view of the tar stream that can record what passes through it.</summary>
    private sealed class RecordingStream(Stream inner) : ObservedReadStream(inner)
    {
        private readonly MemoryStream _recording = new();
        private long _position;
        private bool _recordingOn;

        public long RecordingStart { get; private set; }

        public ReadOnlySpan<byte> Recorded => _recording.GetBuffer().AsSpan(0, (int)_recording.Length);

        public override long Position
        {
            get => _position;
            set => throw new NotSupportedException();
        }

        public void StartRecording()
        {
            _recording.SetLength(0);
            RecordingStart = _position;
            _recordingOn = true;
        }

        public void StopRecording() => _recordingOn = false;

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _recording.Dispose();
            }

            base.Dispose(disposing);
        }

        protected override void Observe(int asked, ReadOnlySpan<byte> read)
        {
            if (_recordingOn)
            {
                _recording.Write(read);
            }

            _position += read.Length;
        }
    }
}
