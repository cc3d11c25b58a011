using System.Formats.Tar;
using System.IO.Compression;
using Microsandbox.Engine.Images.Cache;

namespace Microsandbox.Engine.Images.Layout;

/// <summary>
/// The files of an image export, read the same way whether it is a folder, a tar of one or a
/// gzip-compressed tar: by the path relative to the export's root (<c>index.json</c>,
/// <c>blobs/sha256/…</c>, <c>manifest.json</c>). A tar is indexed once, and each file is read later
/// straight from its place in the tar, so nothing is unpacked.
/// </summary>
internal abstract class ImageArchive : IDisposable
{
    protected ImageArchive(string path) => Path = path;

    /// <summary>The folder or file the archive was opened from.</summary>
    public string Path { get; }

    /// <summary>
    /// Opens <paramref name="path"/>: a folder, a tar or a gzip-compressed tar, whose root is the
    /// export's root or one folder holding it. A gzip tar is unpacked to a temporary tar in
    /// <paramref name="scratch"/> first, deleted with the archive. <c>ImportPathNotFound</c>
    /// when nothing is there, <c>ImageLayoutInvalid</c> when the file is no tar.
    /// </summary>
    public static ImageArchive Open(string path, string scratch, CancellationToken cancellationToken)
    {
        if (Directory.Exists(path))
        {
            return new FolderArchive(path);
        }

        if (!File.Exists(path))
        {
            throw new SandboxException("ImportPathNotFound", SandboxErrorKind.NotFound,
                $"There is no image folder or archive at '{path}'.", path);
        }

        string? unpacked = null;
        try
        {
            if (StartsWith(path, LayerTar.GzipMagic))
            {
                unpacked = System.IO.Path.Join(scratch, $"import.{Guid.NewGuid():N}.tmp");
                using var gzip = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
                using var tar = new FileStream(unpacked, FileMode.CreateNew, FileAccess.Write);
                byte[] buffer = new byte[1 << 17];
                int read;
                while ((read = gzip.Read(buffer)) > 0)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    tar.Write(buffer, 0, read);
                }
            }

            return new TarArchive(path, unpacked ?? path, unpacked is not null);
        }
        catch (Exception e) when (e is InvalidDataException or FormatException or EndOfStreamException)
        {
            if (unpacked is not null)
            {
                File.Delete(unpacked);
            }

            throw LayoutErrors.Invalid(path, $"it is not a tar archive ({e.Message})", e);
        }
        catch
        {
            if (unpacked is not null)
            {
                File.Delete(unpacked);
            }

            throw;
        }
    }

    /// <summary>The size of a file in the archive, or null when there is no such file.</summary>
    public abstract long? Length(string name);

    /// <summary>Opens a file of the archive; <c>ImageLayoutInvalid</c> when it is not there.</summary>
    public abstract Stream Open(string name);

    /// <summary>Whether the archive holds the file.</summary>
    public bool Contains(string name) => Length(name) is not null;

    /// <summary>Reads a small file whole, refusing one larger than <paramref name="limit"/> bytes.</summary>
    public byte[] ReadAll(string name, long limit)
    {
        long length = Length(name) ?? throw LayoutErrors.Missing(Path, name);
        if (length > limit)
        {
            throw LayoutErrors.Invalid(Path, $"'{name}' is larger than {limit} bytes");
        }

        using Stream stream = Open(name);
        byte[] content = new byte[length];
        stream.ReadExactly(content);
        return content;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the archive's files.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <summary>
    /// A path inside the export as a clean relative path (<c>./a//b</c> is <c>a/b</c>), or null when
    /// it climbs out of the root, so a hostile manifest.json cannot name a file outside it.
    /// </summary>
    protected internal static string? Normalize(string name)
    {
        var parts = new List<string>();
        foreach (string part in name.Replace('\\', '/').Split('/'))
        {
            if (part is "" or ".")
            {
                continue;
            }

            if (part == "..")
            {
                if (parts.Count == 0)
                {
                    return null;
                }

                parts.RemoveAt(parts.Count - 1);
                continue;
            }

            parts.Add(part);
        }

        return string.Join('/', parts);
    }

    private static bool StartsWith(string path, byte[] magic)
    {
        using FileStream file = File.OpenRead(path);
        Span<byte> head = stackalloc byte[magic.Length];
        return file.ReadAtLeast(head, head.Length, throwOnEndOfStream: false) == head.Length
            && head.SequenceEqual(magic);
    }

    private sealed class FolderArchive(string path) : ImageArchive(path)
    {
        public override long? Length(string name) =>
            Resolve(name) is { } file && File.Exists(file) ? new FileInfo(file).Length : null;

        public override Stream Open(string name)
        {
            string file = Resolve(name) ?? throw LayoutErrors.Missing(Path, name);
            try
            {
                return new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read,
                    bufferSize: 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                throw LayoutErrors.Missing(Path, name);
            }
        }

        private string? Resolve(string name) =>
            Normalize(name) is { Length: > 0 } relative ? System.IO.Path.Join(Path, relative) : null;
    }

    /// <summary>A tar indexed by entry name: where each file's bytes start, and how many.</summary>
    private sealed class TarArchive : ImageArchive
    {
        private readonly string _tarPath;
        private readonly bool _ownsTar;
        private readonly Dictionary<string, (long Offset, long Length)> _files = new(StringComparer.Ordinal);
        private readonly string _root;

        public TarArchive(string path, string tarPath, bool ownsTar)
            : base(path)
        {
            _tarPath = tarPath;
            _ownsTar = ownsTar;
            var links = new Dictionary<string, string>(StringComparer.Ordinal);
            using (var file = File.OpenRead(tarPath))
            using (var reader = new TarReader(file))
            {
                while (reader.GetNextEntry(copyData: false) is { } entry)
                {
                    string? name = Normalize(entry.Name);
                    if (name is not { Length: > 0 })
                    {
                        continue;
                    }

                    switch (entry.EntryType)
                    {
                        case TarEntryType.RegularFile or TarEntryType.V7RegularFile
                            or TarEntryType.ContiguousFile:
                            _files[name] = (DataOffset(file, entry), entry.Length);
                            break;
                        case TarEntryType.HardLink:
                            links[name] = entry.LinkName;
                            break;
                        case TarEntryType.SymbolicLink:
                            // Old docker save writes a layer shared by two images once, and links it.
                            links[name] = string.Join('/', name.Split('/')[..^1].Append(entry.LinkName));
                            break;
                    }
                }
            }

            foreach (var (name, target) in links)
            {
                if (Normalize(target) is { } resolved && _files.TryGetValue(resolved, out var found))
                {
                    _files[name] = found;
                }
            }

            _root = FindRoot();
        }

        public override long? Length(string name) => Find(name)?.Length;

        public override Stream Open(string name)
        {
            var (offset, length) = Find(name) ?? throw LayoutErrors.Missing(Path, name);
            var file = new FileStream(_tarPath, FileMode.Open, FileAccess.Read, FileShare.Read,
                bufferSize: 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
            file.Position = offset;
            return new SliceStream(file, length);
        }

        protected override void Dispose(bool disposing)
        {
            if (_ownsTar)
            {
                File.Delete(_tarPath);
            }

            base.Dispose(disposing);
        }

        // On a seekable tar an entry's data stream reads the tar itself at the data's place, so
        // after one byte the tar stands just past it (net8.0 has no TarEntry.DataOffset).
        private static long DataOffset(FileStream tar, TarEntry entry)
        {
            if (entry.Length == 0 || entry.DataStream is not { } data)
            {
                return 0;
            }

            data.ReadByte();
            return tar.Position - 1;
        }

        private (long Offset, long Length)? Find(string name) =>
            Normalize(_root + name) is { } key && _files.TryGetValue(key, out var found) ? found : null;

        // A tar of a layout folder made from outside it (tar -cf x.tar layout/) has the folder's
        // name before every path.
        private string FindRoot()
        {
            if (_files.ContainsKey(OciLayout.MarkerFile) || _files.ContainsKey(DockerArchive.ManifestFile))
            {
                return "";
            }

            string[] tops = [.. _files.Keys.Select(key => key.Split('/')[0]).Distinct(StringComparer.Ordinal)];
            return tops.Length == 1 ? tops[0] + "/" : "";
        }
    }

    /// <summary>A window of a file: <paramref name="length"/> bytes from its current position.</summary>
    private sealed class SliceStream(FileStream file, long length) : Stream
    {
        private readonly long _length = length;
        private long _left = length;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => _length;

        public override long Position
        {
            get => _length - _left;
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) =>
            Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int read = file.Read(buffer[..(int)Math.Min(buffer.Length, _left)]);
            _left -= read;
            return read;
        }

        public override async ValueTask<int> ReadAsync(
            Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            int read = await file.ReadAsync(buffer[..(int)Math.Min(buffer.Length, _left)], cancellationToken)
                .ConfigureAwait(false);
            _left -= read;
            return read;
        }

        public override Task<int> ReadAsync(
            byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) =>
            throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                file.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
