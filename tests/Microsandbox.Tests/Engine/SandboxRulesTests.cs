using System.Text;
using Microsandbox.Engine;

namespace Microsandbox.Tests.Engine;

public sealed class SandboxRulesTests
{
    private static Dictionary<string, string> Map(params (string Key, string Value)[] pairs) =>
        pairs.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);

    [Theory]
    [InlineData("a")]
    [InlineData("web-01")]
    [InlineData("with space")]
    [InlineData("ünïcödé ✓")]
    public void ValidateName_accepts_ordinary_names(string name) => AssertNoThrow(() => SandboxRules.ValidateName(name));

    [Theory]
    [InlineData("default", "default")]
    [InlineData("python", "python")]
    [InlineData("127.0.0.1:5000/team/python:3.12", "python")]
    [InlineData("ghcr.io/org/app@sha256:0123", "app")]
    [InlineData("./images/alpine.qcow2", "alpine.qcow2")]
    [InlineData("/srv/rootfs/", "rootfs")]
    [InlineData("..", "sandbox")]
    [InlineData("/", "sandbox")]
    public void GenerateName_takes_the_image_name_and_six_hex_digits(string image, string stem)
    {
        string name = SandboxRules.GenerateName(image);

        Assert.Matches($"^{System.Text.RegularExpressions.Regex.Escape(stem)}-[0-9a-f]{{6}}$", name);
        AssertNoThrow(() => SandboxRules.ValidateName(name));
        Assert.NotEqual(name, SandboxRules.GenerateName(image));
    }

    [Theory]
    [InlineData("")]
    [InlineData(null)]
    public void ValidateName_rejects_an_empty_name(string? name)
    {
        var ex = Assert.Throws<SandboxException>(() => SandboxRules.ValidateName(name));

        Assert.Equal("SandboxNameEmpty", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal("", ex.Target);
    }

    [Fact]
    public void ValidateName_counts_UTF8_bytes_not_chars()
    {
        string exact = new('é', 64);
        string over = exact + "a";
        Assert.Equal(128, Encoding.UTF8.GetByteCount(exact));
        Assert.Equal(129, Encoding.UTF8.GetByteCount(over));
        Assert.True(over.Length < SandboxRules.MaxNameBytes);

        AssertNoThrow(() => SandboxRules.ValidateName(exact));
        AssertNoThrow(() => SandboxRules.ValidateName(new string('x', 128)));
        var ex = Assert.Throws<SandboxException>(() => SandboxRules.ValidateName(over));

        Assert.Equal("SandboxNameTooLong", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal(over, ex.Target);
        Assert.Contains("129", ex.Message, StringComparison.Ordinal);
        Assert.Equal("SandboxNameTooLong",
            Assert.Throws<SandboxException>(() => SandboxRules.ValidateName(new string('x', 129))).ErrorId);
    }

    [Theory]
    [InlineData("a\tb")]
    [InlineData("a\nb")]
    [InlineData("\0")]
    [InlineData("bell\u0007")]
    [InlineData("del\u007f")]
    [InlineData("c1\u0085")]
    public void ValidateName_rejects_control_characters(string name)
    {
        var ex = Assert.Throws<SandboxException>(() => SandboxRules.ValidateName(name));

        Assert.Equal("SandboxNameInvalid", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal(name, ex.Target);
    }

    [Theory]
    [InlineData("sandbox.id")]
    [InlineData("microsandbox.version")]
    [InlineData("service.port")]
    [InlineData("sandbox.")]
    public void ValidateLabels_rejects_reserved_prefixes_naming_the_key(string key)
    {
        var labels = Map(("fine", "1"), (key, "x"));

        var ex = Assert.Throws<SandboxException>(() => SandboxRules.ValidateLabels(labels));

        Assert.Equal("ReservedLabelKey", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal(key, ex.Target);
        Assert.Contains(key, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData(" ")]
    public void ValidateLabels_rejects_an_empty_key(string key)
    {
        var ex = Assert.Throws<SandboxException>(() => SandboxRules.ValidateLabels(Map((key, "v"))));

        Assert.Equal("InvalidLabelKey", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, ex.Kind);
    }

    [Fact]
    public void ValidateLabels_accepts_near_misses_and_valueless_labels()
    {
        var labels = Map(
            ("sandboxy.x", "1"), ("sandbox", "2"), ("my.sandbox.x", "3"), ("services.x", "4"),
            ("Sandbox.x", "5"), ("valueless", ""));

        AssertNoThrow(() => SandboxRules.ValidateLabels(labels));
        AssertNoThrow(() => SandboxRules.ValidateLabels([]));
        Assert.Equal(["sandbox.", "microsandbox.", "service."], SandboxRules.ReservedLabelPrefixes);
    }

    [Theory]
    [InlineData(0, 512, "InvalidCpuCount", 0)]
    [InlineData(-1, 512, "InvalidCpuCount", -1)]
    [InlineData(0, 1, "InvalidCpuCount", 0)]
    [InlineData(1, 63, "InvalidMemorySize", 63)]
    [InlineData(2, 0, "InvalidMemorySize", 0)]
    public void ValidateResources_rejects_unusable_sizes(int cpus, int memory, string errorId, int target)
    {
        var ex = Assert.Throws<SandboxException>(() => SandboxRules.ValidateResources(cpus, memory));

        Assert.Equal(errorId, ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal(target, ex.Target);
    }

    [Theory]
    [InlineData(1, 64)]
    [InlineData(16, 65536)]
    public void ValidateResources_accepts_the_minimums_and_more(int cpus, int memory) =>
        AssertNoThrow(() => SandboxRules.ValidateResources(cpus, memory));

    [Theory]
    [InlineData("a=b", "a", "b")]
    [InlineData("a", "a", null)]
    [InlineData("a=", "a", "")]
    [InlineData("a=b=c", "a", "b=c")]
    [InlineData("team.name=web app", "team.name", "web app")]
    public void ParseSelector_reads_key_and_optional_value(string term, string key, string? value)
    {
        LabelSelector selector = SandboxRules.ParseSelector(term);

        Assert.Equal(key, selector.Key);
        Assert.Equal(value, selector.Value);
    }

    [Theory]
    [InlineData("=b")]
    [InlineData(" a=b")]
    [InlineData("")]
    [InlineData("  ")]
    [InlineData(" =b")]
    [InlineData("=")]
    public void ParseSelector_rejects_malformed_terms(string term)
    {
        var ex = Assert.Throws<SandboxException>(() => SandboxRules.ParseSelector(term));

        Assert.Equal("InvalidLabelSelector", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal(term, ex.Target);
    }

    [Fact]
    public void ParseSelectors_splits_comma_joined_terms_and_keeps_separate_ones()
    {
        IReadOnlyList<LabelSelector> selectors = SandboxRules.ParseSelectors(["app=engine,tier=web", "gpu"]);

        Assert.Equal(
            [new LabelSelector("app", "engine"), new LabelSelector("tier", "web"), new LabelSelector("gpu", null)],
            selectors);
    }

    [Theory]
    [InlineData("app=engine,")]
    [InlineData(",app=engine")]
    [InlineData("app=engine,,tier=web")]
    [InlineData("app=engine, tier=web")]
    public void ParseSelectors_refuses_an_empty_or_spaced_term_naming_the_whole_argument(string text)
    {
        var ex = Assert.Throws<SandboxException>(() => SandboxRules.ParseSelectors([text]));

        Assert.Equal("InvalidLabelSelector", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal(text, ex.Target);
    }

    [Fact]
    public void A_key_only_selector_matches_any_value_of_the_key()
    {
        LabelSelector selector = SandboxRules.ParseSelector("env");

        Assert.True(selector.Matches(Map(("env", "prod"))));
        Assert.True(selector.Matches(Map(("env", ""), ("other", "x"))));
        Assert.False(selector.Matches(Map(("other", "env"))));
        Assert.False(selector.Matches(Map(("ENV", "prod"))));
        Assert.False(selector.Matches(Map()));
        Assert.False(selector.Matches(null!));
    }

    [Fact]
    public void An_empty_value_selector_matches_only_the_empty_value()
    {
        LabelSelector selector = SandboxRules.ParseSelector("flag=");

        Assert.True(selector.Matches(Map(("flag", ""))));
        Assert.False(selector.Matches(Map(("flag", "x"))));
        Assert.False(selector.Matches(Map(("flag", " "))));
        Assert.False(selector.Matches(Map()));
    }

    [Fact]
    public void A_key_value_selector_matches_the_exact_pair()
    {
        LabelSelector selector = SandboxRules.ParseSelector("env=prod");

        Assert.True(selector.Matches(Map(("env", "prod"), ("tier", "web"))));
        Assert.False(selector.Matches(Map(("env", "Prod"))));
        Assert.False(selector.Matches(Map(("env", "prod "))));
        Assert.False(selector.Matches(Map(("env", ""))));
        Assert.False(selector.Matches(Map(("tier", "prod"))));
    }

    [Theory]
    [InlineData("a=b")]
    [InlineData("a")]
    [InlineData("a=")]
    public void A_selector_prints_as_it_parses(string term)
    {
        LabelSelector selector = SandboxRules.ParseSelector(term);

        Assert.Equal(term, selector.ToString());
        Assert.Equal(selector, SandboxRules.ParseSelector(selector.ToString()));
    }

    [Theory]
    [InlineData("a=b", "a", "b")]
    [InlineData("a", "a", "")]
    [InlineData("a=", "a", "")]
    [InlineData("a=b=c", "a", "b=c")]
    [InlineData("url=http://x/?q=1", "url", "http://x/?q=1")]
    [InlineData("=b", "", "b")]
    public void ParseLabel_splits_at_the_first_equals_sign(string text, string key, string value)
    {
        KeyValuePair<string, string> label = SandboxRules.ParseLabel(text);

        Assert.Equal(key, label.Key);
        Assert.Equal(value, label.Value);
    }

    [Fact]
    public void A_parsed_label_with_no_key_fails_validation()
    {
        KeyValuePair<string, string> label = SandboxRules.ParseLabel("=b");

        Assert.Equal("InvalidLabelKey",
            Assert.Throws<SandboxException>(() => SandboxRules.ValidateLabels([label])).ErrorId);
    }

    private static void AssertNoThrow(Action action) => Assert.Null(Record.Exception(action));
}
