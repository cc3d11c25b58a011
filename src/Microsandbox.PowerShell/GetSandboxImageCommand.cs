using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Gets the images in the layer cache.</para>
/// <para type="description">Lists the OCI images pulled into the cache of the current home ($env:MSB_HOME, else ~/.microsandbox), with their digest, size, layers, build time and EROFS base.</para>
/// </summary>
[Cmdlet(VerbsCommon.Get, "SandboxImage")]
[OutputType(typeof(SandboxImageInfo))]
public sealed class GetSandboxImageCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">References of the images to get, such as python or 127.0.0.1:5000/app:1.0. Wildcards are allowed and match the whole canonical reference; omitted, all cached images are listed.</para>
    /// </summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Reference")]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxImageCompleter))]
    [SupportsWildcards]
    public string[]? Name { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        try
        {
            IEnumerable<SandboxImageInfo> found = Name is null ? Engine.Images.List() : ResolveImages(Name);
            foreach (SandboxImageInfo image in found)
            {
                WriteObject(image);
            }
        }
        catch (SandboxException ex)
        {
            ThrowSandboxError(ex);
        }
    }
}
