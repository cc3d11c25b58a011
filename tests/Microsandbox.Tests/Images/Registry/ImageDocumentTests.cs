using System.Text;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>Manifests, indexes, configs and platforms as registries really write them.</summary>
public sealed class ImageDocumentTests
{
    private const string A = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    private const string B = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    private const string C = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    private const string D = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

    [Fact]
    public void A_Docker_config_with_null_fields_parses_to_empty_values()
    {
        // The shape `docker inspect` shows for a scratch image: Docker writes null, not absent.
        byte[] json = Encoding.UTF8.GetBytes("""
            {"architecture":"amd64","os":"linux","created":"2023-01-02T03:04:05.123456789Z",
             "config":{"Env":null,"Cmd":null,"Entrypoint":null,"WorkingDir":"","User":"","Labels":null},
             "rootfs":{"type":"layers","diff_ids":[]}}
            """);

        ImageConfig config = ImageConfig.Parse(json, "scratch");

        Assert.Empty(config.Env);
        Assert.Null(config.Cmd);
        Assert.Null(config.Entrypoint);
        Assert.Null(config.WorkingDir);
        Assert.Null(config.User);
        Assert.Empty(config.Labels);
        Assert.Equal(new DateTimeOffset(2023, 1, 2, 3, 4, 5, TimeSpan.Zero), config.Created!.Value.AddTicks(
            -(config.Created.Value.Ticks % TimeSpan.TicksPerSecond)));
    }

    [Fact]
    public void A_config_with_every_applied_field_keeps_them()
    {
        byte[] json = Encoding.UTF8.GetBytes("""
            {"architecture":"arm64","variant":"v8","os":"linux",
             "config":{"Env":["A=1","B=two=2"],"WorkingDir":"/app","User":"nobody",
                       "Entrypoint":["python3"],"Cmd":["-m","http.server"],
                       "Labels":{"org.opencontainers.image.title":"demo"},"StopSignal":"SIGINT"},
             "rootfs":{"type":"layers","diff_ids":["sha256:aa","sha256:bb"]}}
            """);

        ImageConfig config = ImageConfig.Parse(json, "demo");

        Assert.Equal(["A=1", "B=two=2"], config.Env);
        Assert.Equal("/app", config.WorkingDir);
        Assert.Equal("nobody", config.User);
        Assert.Equal(["python3"], config.Entrypoint);
        Assert.Equal(["-m", "http.server"], config.Cmd);
        Assert.Equal("demo", config.Labels["org.opencontainers.image.title"]);
        Assert.Equal("SIGINT", config.StopSignal);
        Assert.Equal("v8", config.Variant);
        Assert.Equal(2, config.DiffIds.Count);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[1,2]")]
    public void A_config_that_is_not_a_JSON_object_is_InvalidImageConfig(string text)
    {
        byte[] json = Encoding.UTF8.GetBytes(text);

        var error = Assert.Throws<SandboxException>(() => ImageConfig.Parse(json, "img"));

        Assert.Equal("InvalidImageConfig", error.ErrorId);
        Assert.Equal("img", error.Target);
    }

    [Fact]
    public void An_index_entry_is_chosen_by_os_architecture_and_variant()
    {
        ImageIndex index = Index(
            Entry(A, "linux", "arm", "v7"),
            Entry(B, "linux", "arm64", "v8"),
            Entry(C, "linux", "amd64", null),
            Entry(D, "unknown", "unknown", null));

        Assert.Equal(C, index.Select(ImagePlatform.Parse("linux/amd64"), "img").Digest);
        Assert.Equal(C, index.Select(ImagePlatform.Parse("linux/x86_64"), "img").Digest);
        Assert.Equal(B, index.Select(ImagePlatform.Parse("linux/arm64"), "img").Digest);
        Assert.Equal(B, index.Select(ImagePlatform.Parse("linux/aarch64/v8"), "img").Digest);
        Assert.Equal(A, index.Select(ImagePlatform.Parse("linux/arm/v7"), "img").Digest);
    }

    [Fact]
    public void An_entry_without_a_variant_is_preferred_when_none_is_asked_for()
    {
        ImageIndex index = Index(Entry(A, "linux", "arm64", "v8"), Entry(B, "linux", "arm64", null));

        Assert.Equal(B, index.Select(ImagePlatform.Parse("linux/arm64"), "img").Digest);
    }

    [Fact]
    public void An_index_without_the_platform_is_ImagePlatformNotFound_listing_what_it_has()
    {
        ImageIndex index = Index(Entry(A, "linux", "arm64", null), Entry(B, "windows", "amd64", null));

        var error = Assert.Throws<SandboxException>(
            () => index.Select(ImagePlatform.Parse("linux/amd64"), "img"));

        Assert.Equal("ImagePlatformNotFound", error.ErrorId);
        Assert.Equal(SandboxErrorKind.NotFound, error.Kind);
        Assert.Contains("linux/arm64, windows/amd64", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_manifest_round_trips_and_omits_absent_fields()
    {
        var manifest = new ImageManifest
        {
            MediaType = ImageMediaTypes.OciManifest,
            Config = new OciDescriptor { MediaType = ImageMediaTypes.OciConfig, Digest = A, Size = 10 },
            Layers = [new OciDescriptor { MediaType = ImageMediaTypes.OciLayerGzip, Digest = B, Size = 20 }],
        };

        byte[] json = manifest.ToJson();
        ImageManifest parsed = ImageManifest.Parse(json, "img");

        Assert.DoesNotContain("annotations", Encoding.UTF8.GetString(json), StringComparison.Ordinal);
        Assert.DoesNotContain("platform", Encoding.UTF8.GetString(json), StringComparison.Ordinal);
        Assert.Equal(manifest.Config, parsed.Config);
        Assert.Equal(manifest.Layers, parsed.Layers);
    }

    [Theory]
    [InlineData("""{"schemaVersion":2,"config":{"digest":"sha256:../../etc/passwd","size":1},"layers":[]}""")]
    [InlineData("""{"schemaVersion":2,"config":{"digest":"SHA:1","size":1},"layers":[]}""")]
    [InlineData("""{"schemaVersion":2,"layers":[]}""")]
    [InlineData("""{"schemaVersion":2,"config":{"size":1},"layers":[]}""")]
    [InlineData("{")]
    public void A_manifest_with_a_bad_descriptor_is_InvalidManifest(string json)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(json);

        var error = Assert.Throws<SandboxException>(() => ImageManifest.Parse(bytes, "img"));

        Assert.Equal("InvalidManifest", error.ErrorId);
    }

    [Theory]
    [InlineData("linux/amd64", "linux", "amd64", null)]
    [InlineData("Linux/ARM64/V8", "linux", "arm64", "v8")]
    [InlineData("linux/x86_64", "linux", "amd64", null)]
    public void Platforms_parse_in_Go_naming(string text, string os, string architecture, string? variant)
    {
        Assert.Equal(new ImagePlatform(os, architecture, variant), ImagePlatform.Parse(text));
    }

    [Theory]
    [InlineData("linux")]
    [InlineData("linux/")]
    [InlineData("a/b/c/d")]
    public void A_malformed_platform_is_InvalidImagePlatform(string text)
    {
        Assert.Equal("InvalidImagePlatform",
            Assert.Throws<SandboxException>(() => ImagePlatform.Parse(text)).ErrorId);
    }

    [Fact]
    public void The_host_platform_is_linux_on_the_host_architecture()
    {
        Assert.Equal("linux", ImagePlatform.Host.Os);
        Assert.Equal(System.Runtime.InteropServices.RuntimeInformation.OSArchitecture switch
        {
            System.Runtime.InteropServices.Architecture.X64 => "amd64",
            System.Runtime.InteropServices.Architecture.Arm64 => "arm64",
            var other => other.ToString().ToLowerInvariant(),
        }, ImagePlatform.Host.Architecture);
    }

    private static ImageIndex Index(params OciDescriptor[] entries) =>
        ImageIndex.Parse(
            new ImageIndex { MediaType = ImageMediaTypes.OciIndex, Manifests = entries }.ToJson(), "img");

    private static OciDescriptor Entry(
        string digest, string os, string architecture, string? variant) => new()
    {
        MediaType = ImageMediaTypes.OciManifest,
        Digest = digest,
        Size = 100,
        Platform = new OciPlatform { Os = os, Architecture = architecture, Variant = variant },
    };
}
