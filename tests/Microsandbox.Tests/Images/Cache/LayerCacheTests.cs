using System.Security.Cryptography;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;

namespace Microsandbox.Tests.Images.Cache;

public sealed class LayerCacheTests : IDisposable
{
    private static readonly CancellationToken None = CancellationToken.None;

    private readonly string _root = Directory.CreateTempSubdirectory("msb-cache-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private LayerCache NewCache() => new(Path.Join(_root, "cache"));

    [Fact]
    public async Task Put_stores_verified_content_under_its_digest_and_leaves_no_temporary_file()
    {
        LayerCache cache = NewCache();
        byte[] content = RandomNumberGenerator.GetBytes(300_000);
        string digest = ContentDigest.Of(content);

        await cache.PutAsync(digest, content, CancellationToken.None);

        Assert.Equal(Path.Join(cache.Root, "blobs", "sha256", digest[7..]), cache.BlobPath(digest));
        Assert.Equal(content, await cache.ReadBlobAsync(digest, CancellationToken.None));
        Assert.Equal([digest], cache.ListBlobs());
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory));
    }

    [Fact]
    public async Task Put_of_content_that_is_not_the_digest_is_BlobDigestMismatch_and_stores_nothing()
    {
        LayerCache cache = NewCache();
        byte[] content = RandomNumberGenerator.GetBytes(1000);
        string claimed = ContentDigest.Of(RandomNumberGenerator.GetBytes(1000));

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            cache.PutAsync(claimed, content, CancellationToken.None));

        Assert.Equal("BlobDigestMismatch", error.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidResult, error.Kind);
        Assert.False(cache.Contains(claimed));
        Assert.Empty(cache.ListBlobs());
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory));
    }

    [Fact]
    public async Task A_writer_failing_midway_leaves_nothing_behind()
    {
        LayerCache cache = NewCache();
        byte[] content = RandomNumberGenerator.GetBytes(500_000);
        string digest = ContentDigest.Of(content);
        using var broken = new BreakingStream(content, breakAfter: 200_000);

        await Assert.ThrowsAsync<IOException>(() => cache.PutAsync(digest, broken, CancellationToken.None));

        Assert.False(cache.Contains(digest));
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory));
    }

    [Fact]
    public async Task Two_writers_racing_on_one_digest_from_separate_caches_leave_one_intact_blob()
    {
        // Separate instances over one folder stand for two sessions; many rounds to make the race real.
        for (int round = 0; round < 20; round++)
        {
            byte[] content = RandomNumberGenerator.GetBytes(256 << 10);
            string digest = ContentDigest.Of(content);
            LayerCache first = NewCache();
            LayerCache second = NewCache();
            using var start = new ManualResetEventSlim();

            Task[] writers =
            [
                Task.Run(async () =>
                {
                    start.Wait();
                    await first.PutAsync(digest, new MemoryStream(content), CancellationToken.None);
                }),
                Task.Run(async () =>
                {
                    start.Wait();
                    await second.PutAsync(digest, new SlowStream(content), CancellationToken.None);
                }),
            ];
            start.Set();
            await Task.WhenAll(writers);

            Assert.Equal(content, File.ReadAllBytes(first.BlobPath(digest)));
        }

        Assert.Empty(Directory.GetFiles(NewCache().IncomingDirectory));
        Assert.Equal(20, NewCache().ListBlobs().Count);
    }

    [Fact]
    public async Task A_second_downloader_of_one_blob_waits_for_the_first_and_finds_it_cached()
    {
        byte[] content = RandomNumberGenerator.GetBytes(100_000);
        string digest = ContentDigest.Of(content);
        LayerCache first = NewCache();
        LayerCache second = NewCache();

        BlobDownload? holder = await first.BeginDownloadAsync(digest, content.Length, CancellationToken.None);
        Assert.NotNull(holder);
        Task<BlobDownload?> waiter = second.BeginDownloadAsync(digest, content.Length, None);
        await Task.Delay(300);
        Assert.False(waiter.IsCompleted, "the second downloader did not wait for the lock");

        await holder.WriteAsync(content, CancellationToken.None);
        await holder.CommitAsync(CancellationToken.None);
        await holder.DisposeAsync();

        Assert.Null(await waiter.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(content, File.ReadAllBytes(second.BlobPath(digest)));
    }

    [Fact]
    public async Task A_waiting_downloader_takes_over_when_the_first_gives_up_and_resumes_its_bytes()
    {
        byte[] content = RandomNumberGenerator.GetBytes(100_000);
        string digest = ContentDigest.Of(content);
        LayerCache first = NewCache();
        LayerCache second = NewCache();

        BlobDownload? holder = await first.BeginDownloadAsync(digest, content.Length, CancellationToken.None);
        Task<BlobDownload?> waiter = second.BeginDownloadAsync(digest, content.Length, None);
        await holder!.WriteAsync(content.AsMemory(0, 40_000), CancellationToken.None);
        await holder.DisposeAsync();

        await using BlobDownload? next = await waiter.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.NotNull(next);
        Assert.Equal(40_000, next.Length);
        Assert.Equal(40_000, next.ResumedFrom);
        await next.WriteAsync(content.AsMemory(40_000), CancellationToken.None);
        await next.CommitAsync(CancellationToken.None);

        Assert.Equal(content, File.ReadAllBytes(second.BlobPath(digest)));
    }

    [Fact]
    public async Task A_download_with_wrong_bytes_is_BlobDigestMismatch_and_its_partial_is_deleted()
    {
        byte[] content = RandomNumberGenerator.GetBytes(10_000);
        string digest = ContentDigest.Of(content);
        LayerCache cache = NewCache();
        content[5] ^= 1;

        await using (BlobDownload? download = await cache.BeginDownloadAsync(digest, content.Length, None))
        {
            await download!.WriteAsync(content, None);
            var error = await Assert.ThrowsAsync<SandboxException>(() => download.CommitAsync(None));
            Assert.Equal("BlobDigestMismatch", error.ErrorId);
        }

        Assert.False(cache.Contains(digest));
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory, "*.partial"));
    }

    [Fact]
    public async Task A_download_receiving_more_than_its_size_is_BlobDigestMismatch_at_once()
    {
        byte[] content = RandomNumberGenerator.GetBytes(1000);
        LayerCache cache = NewCache();

        await using BlobDownload? download = await cache.BeginDownloadAsync(ContentDigest.Of(content), 999,
            CancellationToken.None);
        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            download!.WriteAsync(content, CancellationToken.None).AsTask());

        Assert.Equal("BlobDigestMismatch", error.ErrorId);
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory, "*.partial"));
    }

    [Theory]
    [InlineData("sha256:../../../../etc/passwd")]
    [InlineData("sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789")]
    [InlineData("sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    public void A_digest_that_is_not_sha256_hex_never_becomes_a_path(string digest)
    {
        LayerCache cache = NewCache();

        var error = Assert.Throws<SandboxException>(() => cache.BlobPath(digest));

        Assert.Equal("InvalidDigest", error.ErrorId);
        Assert.Equal(digest, error.Target);
    }

    [Fact]
    public async Task A_missing_blob_is_BlobNotCached()
    {
        LayerCache cache = NewCache();
        string digest = ContentDigest.Of([1, 2, 3]);

        Assert.Equal("BlobNotCached", Assert.Throws<SandboxException>(() => cache.OpenBlob(digest)).ErrorId);
        Assert.Equal("BlobNotCached", (await Assert.ThrowsAsync<SandboxException>(() =>
            cache.ReadBlobAsync(digest, CancellationToken.None))).ErrorId);
    }

    [Fact]
    public async Task References_are_recorded_replaced_listed_and_removed()
    {
        LayerCache cache = NewCache();
        string one = ContentDigest.Of([1]);
        string two = ContentDigest.Of([2]);
        DateTimeOffset now = DateTimeOffset.UtcNow;

        await cache.SetReferenceAsync(Entry("docker.io/library/python:latest", one, now), None);
        await cache.SetReferenceAsync(Entry("127.0.0.1:5000/app:1", one, now), CancellationToken.None);
        await cache.SetReferenceAsync(Entry("docker.io/library/python:latest", two, now), None);

        Assert.Equal(two, cache.FindReference("docker.io/library/python:latest")!.ManifestDigest);
        Assert.Equal(["127.0.0.1:5000/app:1", "docker.io/library/python:latest"],
            NewCache().ListReferences().Select(r => r.Reference));
        Assert.Null(cache.FindReference("docker.io/library/python:3"));
        Assert.True(cache.RemoveReference("127.0.0.1:5000/app:1"));
        Assert.False(cache.RemoveReference("127.0.0.1:5000/app:1"));
        Assert.Single(cache.ListReferences());
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory));
    }

    [Fact]
    public void A_corrupt_reference_file_is_skipped_rather_than_failing_the_listing()
    {
        LayerCache cache = NewCache();
        File.WriteAllText(Path.Join(cache.ReferencesDirectory, "junk.json"), "{ truncated");

        Assert.Empty(cache.ListReferences());
    }

    [Fact]
    public void Stale_temporary_files_are_removed_and_partial_downloads_kept()
    {
        LayerCache cache = NewCache();
        string stale = Path.Join(cache.IncomingDirectory, "abc.1234.tmp");
        string fresh = Path.Join(cache.IncomingDirectory, "def.5678.tmp");
        string partial = Path.Join(cache.IncomingDirectory, "sha256-abc.partial");
        File.WriteAllText(stale, "x");
        File.WriteAllText(fresh, "x");
        File.WriteAllText(partial, "x");
        File.SetLastWriteTimeUtc(stale, DateTime.UtcNow.AddDays(-2));
        File.SetLastWriteTimeUtc(partial, DateTime.UtcNow.AddDays(-2));

        Assert.Equal(1, cache.RemoveStaleTemporaryFiles(TimeSpan.FromDays(1)));
        Assert.False(File.Exists(stale));
        Assert.True(File.Exists(fresh));
        Assert.True(File.Exists(partial));
    }

    [Fact]
    public async Task A_removed_blob_is_gone()
    {
        LayerCache cache = NewCache();
        byte[] content = [9, 9, 9];
        string digest = ContentDigest.Of(content);
        await cache.PutAsync(digest, content, CancellationToken.None);

        Assert.True(cache.RemoveBlob(digest));
        Assert.False(cache.Contains(digest));
        Assert.False(cache.RemoveBlob(digest));
    }

    private static CachedReference Entry(string reference, string manifest, DateTimeOffset when) => new()
    {
        Reference = reference,
        ManifestDigest = manifest,
        Platform = "linux/amd64",
        PulledAt = when,
    };

    /// <summary>Hands out its bytes in small pieces with pauses, so that racing writers overlap.</summary>
    private sealed class SlowStream(byte[] content) : MemoryStream(content)
    {
        public override async ValueTask<int> ReadAsync(
            Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Task.Yield();
            return await base.ReadAsync(buffer[..Math.Min(buffer.Length, 32 << 10)], cancellationToken);
        }
    }

    /// <summary>Fails like a dropped connection after some bytes.</summary>
    private sealed class BreakingStream(byte[] content, int breakAfter) : MemoryStream(content)
    {
        public override async ValueTask<int> ReadAsync(
            Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (Position >= breakAfter)
            {
                throw new IOException("The connection broke.");
            }

            return await base.ReadAsync(buffer[..Math.Min(buffer.Length, breakAfter - (int)Position)],
                cancellationToken);
        }
    }
}
