"""Co-Settle for Hugging Face: a light projection on a frozen image ViT, trained for video.

Public API:
    CoSettleConfig      the adapter's configuration (projection, base backbone, method settings)
    CoSettleModel       the adapter: from_backbone / from_pretrained / save_pretrained / push_to_hub,
                        with the frozen backbone as a registered submodule (`model.backbone`)
    CoSettleOutput      what the model returns: last_hidden_state, pooler_output, features,
                        backbone_features, grid_size
    BackboneEncoder     any supported transformers ViT as a frozen patch-token encoder
    supported_model_types()   the backbone `model_type`s co-settle-hf knows
    import_official()   one of the paper's eight published models as a self-contained adapter
"""

from transformers import AutoConfig, AutoModel

from .backbones.encoder import BackboneEncoder
from .backbones.families import supported_model_types
from .configuration_co_settle import CoSettleConfig
from .modeling_co_settle import CoSettleModel, CoSettleOutput
from .official.importing import import_official

AutoConfig.register("co_settle", CoSettleConfig, exist_ok=True)
AutoModel.register(CoSettleConfig, CoSettleModel, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["BackboneEncoder", "CoSettleConfig", "CoSettleModel", "CoSettleOutput", "import_official", "supported_model_types"]
