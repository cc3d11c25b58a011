using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Removes images from the layer cache.</para>
/// <para type="description">Deletes each image's reference record, its EROFS base and the blobs no other cached image needs. An image that a sandbox was created from is refused unless -Force is given; such sandboxes then rebuild their base on their next start, pulling the image again.</para>
/// </summary>
[Cmdlet(VerbsCommon.Remove, "SandboxImage", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(void))]
public sealed class RemoveSandboxImageCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">References of the images to remove. Wildcards are allowed and match the whole canonical reference; the Reference property of Get-SandboxImage output binds here.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true,
        ValueFromPipelineByPropertyName = true)]
    [Alias("Reference")]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxImageCompleter))]
    [SupportsWildcards]
    public string[] Name { get; set; } = [];

    /// <summary>
    /// <para type="description">Remove images that sandboxes were created from too; also suppresses the confirmation prompt.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        // Resolved whole before any removal, so that the listing is not read while it changes.
        List<SandboxImageInfo> targets = [.. ResolveImages(Name)];
        foreach (SandboxImageInfo image in targets)
        {
            if (!ShouldProcessUnlessForced(Force, image.Reference, "Remove image"))
            {
                continue;
            }

            try
            {
                Run((messages, _) =>
                {
                    Engine.Images.Remove(image.Reference, Force, messages);
                    return Task.FromResult(true);
                });
            }
            catch (SandboxException ex)
            {
                WriteSandboxError(ex);
            }
        }
    }
}
